/*
 * A strict, small JSON parser for tapd's reply to `open` (docs/protocol.md, "Replies"):
 *   {"v":1,"ok":true,"lease":{..."queues":N...}}
 *   {"v":1,"ok":false,"error":{"code":"...","message":"..."}}
 * The whole body must be one well-formed JSON object (RFC 8259: UTF-8 checked byte by byte,
 * no trailing data, no lone surrogates), nested at most MAX_DEPTH deep. Fields we do not use
 * are checked for syntax and skipped, so tapd may add fields; the ones we use must have the
 * right type and range and appear once. \u0000 is refused anywhere: a C string would end there.
 * Every read is bounds-checked against `end`; nothing is written outside `scratch[0..len]`.
 */
#include "tapd-reply.h"

#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 16
#define MAX_CODE 64
#define KEY_CAP 16 /* longer keys are none of ours: they are checked and skipped */

struct parser {
	const unsigned char *at, *end;
	const char *err;
	const unsigned char *err_at;
	char *out, *out_end; /* scratch still free */
	int depth;
};

static int fail(struct parser *p, const char *why)
{
	if (!p->err) {
		p->err = why;
		p->err_at = p->at;
	}
	return -1;
}

static void skip_ws(struct parser *p)
{
	while (p->at < p->end && (*p->at == ' ' || *p->at == '\t' || *p->at == '\n' || *p->at == '\r'))
		p->at++;
}

/* The next significant byte, or 0 at the end (a NUL byte reads the same: never valid JSON). */
static unsigned char peek(struct parser *p)
{
	skip_ws(p);
	return p->at < p->end ? *p->at : 0;
}

static int hex4(struct parser *p, unsigned *v)
{
	unsigned x = 0;
	if (p->end - p->at < 4)
		return fail(p, "truncated \\u escape");
	for (int i = 0; i < 4; i++) {
		unsigned c = p->at[i], d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return fail(p, "bad \\u escape");
		x = x * 16 + d;
	}
	p->at += 4;
	*v = x;
	return 0;
}

/* Appends byte b to dst if there is room; n counts every byte, room or not. */
static void put(char *dst, size_t cap, size_t *n, unsigned char b)
{
	if (dst && *n < cap)
		dst[*n] = (char)b;
	(*n)++;
}

/*
 * A string at p->at (which is '"'). Decoded bytes go to dst (up to cap of them; *n is the full
 * decoded length, so the caller sees when it did not fit). dst may be NULL: check only.
 */
static int string(struct parser *p, char *dst, size_t cap, size_t *n)
{
	*n = 0;
	p->at++; /* the opening quote */
	for (;;) {
		if (p->at >= p->end)
			return fail(p, "unterminated string");
		unsigned c = *p->at;
		if (c == '"') {
			p->at++;
			return 0;
		}
		if (c < 0x20)
			return fail(p, "control character in string");
		if (c == '\\') {
			if (p->end - p->at < 2)
				return fail(p, "unterminated string");
			unsigned e = p->at[1];
			p->at += 2;
			unsigned cp;
			switch (e) {
			case '"': cp = '"'; break;
			case '\\': cp = '\\'; break;
			case '/': cp = '/'; break;
			case 'b': cp = '\b'; break;
			case 'f': cp = '\f'; break;
			case 'n': cp = '\n'; break;
			case 'r': cp = '\r'; break;
			case 't': cp = '\t'; break;
			case 'u':
				if (hex4(p, &cp) < 0)
					return -1;
				if (cp >= 0xDC00 && cp <= 0xDFFF)
					return fail(p, "lone low surrogate");
				if (cp >= 0xD800 && cp <= 0xDBFF) {
					unsigned lo;
					if (p->end - p->at < 2 || p->at[0] != '\\' || p->at[1] != 'u')
						return fail(p, "lone high surrogate");
					p->at += 2;
					if (hex4(p, &lo) < 0)
						return -1;
					if (lo < 0xDC00 || lo > 0xDFFF)
						return fail(p, "lone high surrogate");
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
				}
				if (cp == 0)
					return fail(p, "\\u0000 in string");
				break;
			default:
				p->at -= 2; /* point at the backslash */
				return fail(p, "bad escape in string");
			}
			if (cp < 0x80) {
				put(dst, cap, n, (unsigned char)cp);
			} else if (cp < 0x800) {
				put(dst, cap, n, (unsigned char)(0xC0 | (cp >> 6)));
				put(dst, cap, n, (unsigned char)(0x80 | (cp & 0x3F)));
			} else if (cp < 0x10000) {
				put(dst, cap, n, (unsigned char)(0xE0 | (cp >> 12)));
				put(dst, cap, n, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
				put(dst, cap, n, (unsigned char)(0x80 | (cp & 0x3F)));
			} else {
				put(dst, cap, n, (unsigned char)(0xF0 | (cp >> 18)));
				put(dst, cap, n, (unsigned char)(0x80 | ((cp >> 12) & 0x3F)));
				put(dst, cap, n, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
				put(dst, cap, n, (unsigned char)(0x80 | (cp & 0x3F)));
			}
			continue;
		}
		/* Raw UTF-8: the shortest form only, no surrogates, nothing above U+10FFFF. */
		size_t more;
		unsigned lo = 0x80, hi = 0xBF;
		if (c < 0x80)
			more = 0;
		else if (c >= 0xC2 && c <= 0xDF)
			more = 1;
		else if (c == 0xE0)
			more = 2, lo = 0xA0;
		else if (c == 0xED)
			more = 2, hi = 0x9F;
		else if (c >= 0xE1 && c <= 0xEF)
			more = 2;
		else if (c == 0xF0)
			more = 3, lo = 0x90;
		else if (c == 0xF4)
			more = 3, hi = 0x8F;
		else if (c >= 0xF1 && c <= 0xF3)
			more = 3;
		else
			return fail(p, "invalid UTF-8");
		if ((size_t)(p->end - p->at) < 1 + more)
			return fail(p, "invalid UTF-8");
		for (size_t i = 1; i <= more; i++) {
			unsigned b = p->at[i];
			if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF))
				return fail(p, "invalid UTF-8");
		}
		for (size_t i = 0; i <= more; i++)
			put(dst, cap, n, p->at[i]);
		p->at += 1 + more;
	}
}

/* A number; *is_int when it has neither fraction nor exponent, then *ival (clamped). */
static int number(struct parser *p, int *is_int, long *ival)
{
	int neg = 0;
	long v = 0;
	*is_int = 1;
	if (p->at < p->end && *p->at == '-') {
		neg = 1;
		p->at++;
	}
	if (p->at >= p->end || *p->at < '0' || *p->at > '9')
		return fail(p, "bad number");
	if (*p->at == '0') {
		p->at++;
	} else {
		while (p->at < p->end && *p->at >= '0' && *p->at <= '9') {
			if (v < 1000000000000L) /* past any range we check: stays out of range */
				v = v * 10 + (*p->at - '0');
			p->at++;
		}
	}
	if (p->at < p->end && *p->at == '.') {
		*is_int = 0;
		p->at++;
		if (p->at >= p->end || *p->at < '0' || *p->at > '9')
			return fail(p, "bad number");
		while (p->at < p->end && *p->at >= '0' && *p->at <= '9')
			p->at++;
	}
	if (p->at < p->end && (*p->at == 'e' || *p->at == 'E')) {
		*is_int = 0;
		p->at++;
		if (p->at < p->end && (*p->at == '+' || *p->at == '-'))
			p->at++;
		if (p->at >= p->end || *p->at < '0' || *p->at > '9')
			return fail(p, "bad number");
		while (p->at < p->end && *p->at >= '0' && *p->at <= '9')
			p->at++;
	}
	*ival = neg ? -v : v;
	return 0;
}

static int literal(struct parser *p, const char *word)
{
	size_t n = strlen(word);
	if ((size_t)(p->end - p->at) < n || memcmp(p->at, word, n) != 0)
		return fail(p, "unexpected character");
	p->at += n;
	return 0;
}

typedef int member_fn(struct parser *p, const char *key, size_t keylen, void *ctx);

static int value(struct parser *p);

static int skip_member(struct parser *p, const char *key, size_t keylen, void *ctx)
{
	(void)key, (void)keylen, (void)ctx;
	return value(p);
}

/* An object at p->at ('{'); each member's value is consumed by fn. */
static int object(struct parser *p, member_fn *fn, void *ctx)
{
	if (++p->depth > MAX_DEPTH)
		return fail(p, "nested too deeply");
	p->at++;
	if (peek(p) == '}') {
		p->at++;
		p->depth--;
		return 0;
	}
	for (;;) {
		char key[KEY_CAP];
		size_t n;
		if (peek(p) != '"')
			return fail(p, "expected a key");
		if (string(p, key, sizeof key, &n) < 0)
			return -1;
		if (peek(p) != ':')
			return fail(p, "expected ':'");
		p->at++;
		if (fn(p, key, n <= sizeof key ? n : SIZE_MAX, ctx) < 0)
			return -1;
		unsigned char c = peek(p);
		if (c == '}') {
			p->at++;
			break;
		}
		if (c != ',')
			return fail(p, "expected ',' or '}'");
		p->at++;
	}
	p->depth--;
	return 0;
}

static int array(struct parser *p)
{
	if (++p->depth > MAX_DEPTH)
		return fail(p, "nested too deeply");
	p->at++;
	if (peek(p) == ']') {
		p->at++;
		p->depth--;
		return 0;
	}
	for (;;) {
		if (value(p) < 0)
			return -1;
		unsigned char c = peek(p);
		if (c == ']') {
			p->at++;
			break;
		}
		if (c != ',')
			return fail(p, "expected ',' or ']'");
		p->at++;
	}
	p->depth--;
	return 0;
}

/* Any value, checked and skipped. */
static int value(struct parser *p)
{
	size_t n;
	int is_int;
	long v;
	switch (peek(p)) {
	case '{': return object(p, skip_member, NULL);
	case '[': return array(p);
	case '"': return string(p, NULL, 0, &n);
	case 't': return literal(p, "true");
	case 'f': return literal(p, "false");
	case 'n': return literal(p, "null");
	case '-': case '0': case '1': case '2': case '3': case '4':
	case '5': case '6': case '7': case '8': case '9':
		return number(p, &is_int, &v);
	case 0: return fail(p, "unexpected end of reply");
	default: return fail(p, "unexpected character");
	}
}

static int key_is(const char *key, size_t keylen, const char *want)
{
	return keylen == strlen(want) && memcmp(key, want, keylen) == 0;
}

/* Sets the bit for a field we use; a second one is an error (which one would count?). */
static int once(struct parser *p, unsigned *seen, unsigned bit)
{
	if (*seen & bit)
		return fail(p, "duplicate field");
	*seen |= bit;
	return 0;
}

static int int_field(struct parser *p, long min, long max, long *out, const char *why)
{
	int is_int;
	const unsigned char *start;
	unsigned char c = peek(p);
	start = p->at;
	if (c != '-' && (c < '0' || c > '9'))
		return fail(p, why);
	if (number(p, &is_int, out) < 0)
		return -1;
	if (!is_int || *out < min || *out > max) {
		p->at = start;
		return fail(p, why);
	}
	return 0;
}

/* A string field decoded into scratch, NUL-terminated. */
static int str_field(struct parser *p, const char **out, const char *why)
{
	size_t cap = (size_t)(p->out_end - p->out), n;
	if (peek(p) != '"')
		return fail(p, why);
	if (string(p, p->out, cap, &n) < 0)
		return -1;
	if (n >= cap) /* cannot happen (decoded < encoded + 1); refuse rather than cut */
		return fail(p, "string does not fit");
	p->out[n] = '\0';
	*out = p->out;
	p->out += n + 1;
	return 0;
}

struct lease { unsigned seen; long queues; };
struct error { unsigned seen; const char *code, *message; };
struct top { unsigned seen; long v; int ok; struct lease lease; struct error error; };

enum { F_V = 1, F_OK = 2, F_LEASE = 4, F_ERROR = 8, F_QUEUES = 16, F_CODE = 32, F_MESSAGE = 64 };

static int lease_member(struct parser *p, const char *key, size_t keylen, void *ctx)
{
	struct lease *l = ctx;
	if (key_is(key, keylen, "queues")) {
		if (once(p, &l->seen, F_QUEUES) < 0)
			return -1;
		return int_field(p, 1, TAPD_MAX_QUEUES, &l->queues, "\"lease.queues\" must be an integer from 1 to 16");
	}
	return value(p);
}

static int error_member(struct parser *p, const char *key, size_t keylen, void *ctx)
{
	struct error *e = ctx;
	if (key_is(key, keylen, "code")) {
		if (once(p, &e->seen, F_CODE) < 0)
			return -1;
		const unsigned char *start = p->at;
		if (str_field(p, &e->code, "\"error.code\" must be a string") < 0)
			return -1;
		size_t n = strlen(e->code);
		int good = n >= 1 && n <= MAX_CODE;
		for (size_t i = 0; good && i < n; i++) {
			char c = e->code[i];
			good = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
		}
		if (!good) {
			p->at = start;
			return fail(p, "\"error.code\" must be 1 to 64 of [a-z0-9_]");
		}
		return 0;
	}
	if (key_is(key, keylen, "message")) {
		if (once(p, &e->seen, F_MESSAGE) < 0)
			return -1;
		return str_field(p, &e->message, "\"error.message\" must be a string");
	}
	return value(p);
}

static int top_member(struct parser *p, const char *key, size_t keylen, void *ctx)
{
	struct top *t = ctx;
	if (key_is(key, keylen, "v")) {
		if (once(p, &t->seen, F_V) < 0)
			return -1;
		return int_field(p, 1, 1, &t->v, "\"v\" must be 1");
	}
	if (key_is(key, keylen, "ok")) {
		if (once(p, &t->seen, F_OK) < 0)
			return -1;
		unsigned char c = peek(p);
		t->ok = c == 't';
		if (c == 't')
			return literal(p, "true");
		if (c == 'f')
			return literal(p, "false");
		return fail(p, "\"ok\" must be true or false");
	}
	if (key_is(key, keylen, "lease")) {
		if (once(p, &t->seen, F_LEASE) < 0)
			return -1;
		if (peek(p) != '{')
			return fail(p, "\"lease\" must be an object");
		return object(p, lease_member, &t->lease);
	}
	if (key_is(key, keylen, "error")) {
		if (once(p, &t->seen, F_ERROR) < 0)
			return -1;
		if (peek(p) != '{')
			return fail(p, "\"error\" must be an object");
		return object(p, error_member, &t->error);
	}
	return value(p);
}

const char *tapd_parse_reply(const unsigned char *buf, size_t len, char *scratch,
			     struct tapd_reply *out, size_t *where)
{
	struct parser p = { .at = buf, .end = buf + len, .out = scratch, .out_end = scratch + len + 1 };
	struct top t = { 0 };

	memset(out, 0, sizeof *out);
	if (peek(&p) != '{')
		fail(&p, "the reply is not a JSON object");
	else if (object(&p, top_member, &t) == 0 && (skip_ws(&p), p.at != p.end))
		fail(&p, "trailing data after the reply");
	if (!p.err) {
		p.at = p.end; /* faults below are about the whole reply */
		if (!(t.seen & F_V))
			fail(&p, "\"v\" is missing");
		else if (!(t.seen & F_OK))
			fail(&p, "\"ok\" is missing");
		else if (t.ok && !(t.lease.seen & F_QUEUES))
			fail(&p, t.seen & F_LEASE ? "\"lease.queues\" is missing" : "\"lease\" is missing");
		else if (!t.ok && !(t.seen & F_ERROR))
			fail(&p, "\"error\" is missing");
		else if (!t.ok && !(t.error.seen & F_CODE))
			fail(&p, "\"error.code\" is missing");
		else if (!t.ok && !(t.error.seen & F_MESSAGE))
			fail(&p, "\"error.message\" is missing");
	}
	if (p.err) {
		*where = (size_t)(p.err_at - buf);
		return p.err;
	}
	out->ok = t.ok;
	if (t.ok) {
		out->queues = t.lease.queues;
	} else {
		out->code = t.error.code;
		out->message = t.error.message;
	}
	return NULL;
}

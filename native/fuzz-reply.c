/*
 * Fuzz driver for tapd-reply.c, deterministic (fixed seed), built with
 * -fsanitize=address,undefined by test/bridge-helper-reply.test.ts:
 *   fuzz-reply N        N generated replies: valid ones (random key order, whitespace, escapes,
 *                       extra fields; the parse must give back exactly what was encoded),
 *                       mutations of valid ones, and random bytes. Each input sits in a buffer of
 *                       exactly its size, so a read past the end is an ASan report.
 *   fuzz-reply --corpus N   the same N inputs with the verdicts, binary, on stdout (the test
 *                       checks every accepted one against JSON.parse)
 *   fuzz-reply --one    parses stdin, prints "ok queues=N", "error CODE MESSAGE" or
 *                       "reject REASON at OFFSET".
 * Exit 0 only if every check held.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapd-reply.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t next(void)
{
	/* xorshift64* */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717ull;
}

static unsigned below(unsigned n)
{
	return n ? (unsigned)(next() % n) : 0;
}

struct buf {
	unsigned char *p;
	size_t len, cap;
};

static void add(struct buf *b, const void *s, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			abort();
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

/* n more bytes at the end, zeroed. */
static void extend(struct buf *b, size_t n)
{
	static const unsigned char zeros[16];
	while (n > 0) {
		size_t k = n < sizeof zeros ? n : sizeof zeros;
		add(b, zeros, k);
		n -= k;
	}
}

static void adds(struct buf *b, const char *s)
{
	add(b, s, strlen(s));
}

static void ws(struct buf *b)
{
	static const char *const w[] = { "", "", "", " ", "\n", "\t", "\r\n  " };
	adds(b, w[below(7)]);
}

static void utf8(struct buf *b, unsigned cp)
{
	unsigned char o[4];
	size_t n;
	if (cp < 0x80)
		o[0] = (unsigned char)cp, n = 1;
	else if (cp < 0x800)
		o[0] = (unsigned char)(0xC0 | cp >> 6), o[1] = (unsigned char)(0x80 | (cp & 0x3F)), n = 2;
	else if (cp < 0x10000)
		o[0] = (unsigned char)(0xE0 | cp >> 12), o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)),
		o[2] = (unsigned char)(0x80 | (cp & 0x3F)), n = 3;
	else
		o[0] = (unsigned char)(0xF0 | cp >> 18), o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F)),
		o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)), o[3] = (unsigned char)(0x80 | (cp & 0x3F)), n = 4;
	add(b, o, n);
}

/* A random code point other than NUL and the surrogates. */
static unsigned any_cp(void)
{
	switch (below(5)) {
	case 0: return 1 + below(0x1F);
	case 1: return 0x20 + below(0x60);
	case 2: return 0x80 + below(0x780);
	case 3: { unsigned c = 0x800 + below(0xF800); return c >= 0xD800 && c <= 0xDFFF ? 0xFFFD : c; }
	default: return 0x10000 + below(0x100000);
	}
}

/* Encodes code point cp into JSON (escaped or raw, at random) in enc and raw UTF-8 in dec. */
static void json_char(struct buf *enc, struct buf *dec, unsigned cp)
{
	char t[16];
	utf8(dec, cp);
	if (cp == '"' || cp == '\\' || cp < 0x20 || below(4) == 0) {
		static const char esc[] = { '"', '\\', '/', '\b', '\f', '\n', '\r', '\t' };
		static const char *const short_esc[] = { "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t" };
		for (int i = 0; i < 8; i++)
			if ((unsigned)esc[i] == cp && below(2)) {
				adds(enc, short_esc[i]);
				return;
			}
		if (cp >= 0x10000) {
			unsigned v = cp - 0x10000;
			snprintf(t, sizeof t, below(2) ? "\\u%04x\\u%04x" : "\\u%04X\\u%04X", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
		} else {
			snprintf(t, sizeof t, below(2) ? "\\u%04x" : "\\u%04X", cp);
		}
		adds(enc, t);
		return;
	}
	utf8(enc, cp);
}

static void json_string(struct buf *enc, struct buf *dec, unsigned maxlen)
{
	unsigned n = below(maxlen + 1);
	adds(enc, "\"");
	for (unsigned i = 0; i < n; i++)
		json_char(enc, dec, any_cp());
	adds(enc, "\"");
}

/* A random JSON value (checked and skipped by the parser). */
static void any_value(struct buf *b, int depth)
{
	struct buf ignore = { 0 };
	char t[48];
	switch (below(depth > 4 ? 5 : 7)) {
	case 0: adds(b, below(2) ? "true" : "false"); break;
	case 1: adds(b, "null"); break;
	case 2: snprintf(t, sizeof t, "%ld", (long)(next() >> below(64)) * (below(2) ? 1 : -1)); adds(b, t); break;
	case 3: snprintf(t, sizeof t, "%.17g", (double)(int64_t)next() / (double)(1 + below(1000000))); adds(b, t); break;
	case 4: json_string(b, &ignore, 12); break;
	case 5: {
		unsigned n = below(4);
		adds(b, "[");
		for (unsigned i = 0; i < n; i++) {
			if (i) adds(b, ",");
			ws(b);
			any_value(b, depth + 1);
			ws(b);
		}
		adds(b, "]");
		break;
	}
	default: {
		unsigned n = below(4);
		adds(b, "{");
		for (unsigned i = 0; i < n; i++) {
			if (i) adds(b, ",");
			ws(b);
			snprintf(t, sizeof t, "\"x%u\":", below(1000));
			adds(b, t);
			ws(b);
			any_value(b, depth + 1);
		}
		adds(b, "}");
	}
	}
	free(ignore.p);
}

struct expect {
	int ok;
	long queues;
	struct buf code, message;
};

/* Members, shuffled, with unknown ones mixed in; `fixed` are "key":value texts. */
static void object_of(struct buf *b, const char *const *fixed, int nfixed, int depth)
{
	int order[8], n = nfixed, extra = (int)below(4);
	for (int i = 0; i < n; i++)
		order[i] = i;
	for (int i = n - 1; i > 0; i--) {
		int j = (int)below((unsigned)i + 1), t = order[i];
		order[i] = order[j], order[j] = t;
	}
	adds(b, "{");
	ws(b);
	int first = 1, placed = 0;
	while (placed < n || extra > 0) {
		if (!first) {
			adds(b, ",");
			ws(b);
		}
		first = 0;
		if (extra > 0 && (placed == n || below(3) == 0)) {
			char t[32];
			/* Unknown keys, some longer than the parser's key buffer. */
			snprintf(t, sizeof t, below(2) ? "\"extra%u\"" : "\"a_much_longer_unknown_key_%u\"", below(100));
			adds(b, t);
			ws(b);
			adds(b, ":");
			ws(b);
			any_value(b, depth + 1);
			extra--;
		} else {
			adds(b, fixed[order[placed++]]);
		}
		ws(b);
	}
	adds(b, "}");
}

static void valid_reply(struct buf *b, struct expect *e)
{
	char q[48];
	memset(e, 0, sizeof *e);
	e->ok = (int)below(2);
	if (e->ok) {
		struct buf l = { 0 };
		e->queues = 1 + below(TAPD_MAX_QUEUES);
		snprintf(q, sizeof q, "\"queues\":%s%ld", below(2) ? " " : "", e->queues);
		const char *lf[] = { q, "\"ifname\":\"tap0\"", "\"bridge\":null", "\"vnet_hdr\":true", "\"mtu\":1500" };
		adds(&l, "\"lease\":");
		object_of(&l, lf, 1 + (int)below(5), 1);
		add(&l, "", 1);
		const char *top[] = { "\"v\":1", "\"ok\":true", (char *)l.p };
		object_of(b, top, 3, 0);
		free(l.p);
	} else {
		struct buf code = { 0 }, msg = { 0 }, ignore = { 0 }, err = { 0 };
		static const char *const codes[] = { "denied", "quota", "network_unavailable", "bad_request", "x", "internal" };
		const char *c = codes[below(6)];
		adds(&e->code, c);
		adds(&code, "\"code\":");
		/* The code may be escaped too. */
		adds(&code, "\"");
		for (const char *s = c; *s; s++)
			json_char(&code, &ignore, (unsigned char)*s);
		adds(&code, "\"");
		add(&code, "", 1);
		adds(&msg, "\"message\":");
		json_string(&msg, &e->message, below(8) ? 40 : 3000);
		add(&msg, "", 1);
		const char *ef[] = { (char *)code.p, (char *)msg.p };
		object_of(&err, ef, 2, 1);
		add(&err, "", 1);
		struct buf er = { 0 };
		adds(&er, "\"error\":");
		adds(&er, (char *)err.p);
		add(&er, "", 1);
		const char *top[] = { "\"v\":1", "\"ok\":false", (char *)er.p };
		object_of(b, top, 3, 0);
		free(code.p), free(msg.p), free(ignore.p), free(err.p), free(er.p);
	}
	add(&e->code, "", 1);
	add(&e->message, "", 1);
	ws(b);
}

static void mutate(struct buf *b)
{
	static const char junk[] = "{}[]\":,\\u0 tfn-1.eE\x80\xC0\xED\xF4\xFF\x01";
	unsigned n = 1 + below(4);
	for (unsigned k = 0; k < n; k++) {
		size_t at = b->len ? below((unsigned)b->len) : 0;
		switch (below(6)) {
		case 0: if (b->len) b->p[at] ^= (unsigned char)(1u << below(8)); break;
		case 1: if (b->len) b->p[at] = (unsigned char)junk[below(sizeof junk - 1)]; break;
		case 2: { unsigned char c = below(2) ? (unsigned char)junk[below(sizeof junk - 1)] : (unsigned char)below(256);
			extend(b, 1); memmove(b->p + at + 1, b->p + at, b->len - 1 - at); b->p[at] = c; break; }
		case 3: if (b->len) { memmove(b->p + at, b->p + at + 1, b->len - at - 1); b->len--; } break;
		case 4: b->len = at; break;
		default: { size_t from = b->len ? below((unsigned)b->len) : 0, n2 = below(16);
			if (from + n2 > b->len) n2 = b->len - from;
			unsigned char tmp[16]; memcpy(tmp, b->p + from, n2); extend(b, n2);
			memmove(b->p + at + n2, b->p + at, b->len - n2 - at); memcpy(b->p + at, tmp, n2); }
		}
	}
}

static void random_bytes(struct buf *b)
{
	static const char alpha[] = "{}[]\":, \n0123456789-+.eEtruefalsnl\\u\"vokleasqucdm";
	unsigned n = below(80);
	int structured = (int)below(2);
	for (unsigned i = 0; i < n; i++) {
		unsigned char c = structured ? (unsigned char)alpha[below(sizeof alpha - 1)] : (unsigned char)below(256);
		add(b, &c, 1);
	}
}

static int valid_utf8_no_nul(const char *s)
{
	const unsigned char *u = (const unsigned char *)s;
	while (*u) {
		if (*u < 0x80) { u++; continue; }
		int n = *u >= 0xF0 ? 3 : *u >= 0xE0 ? 2 : 1;
		if (*u < 0xC2 || *u > 0xF4) return 0;
		for (int i = 1; i <= n; i++) if ((u[i] & 0xC0) != 0x80) return 0;
		u += n + 1;
	}
	return 1;
}

/* Parses b from an exact-size copy; checks the invariants of any accepted reply. */
static const char *parse(const struct buf *b, struct tapd_reply *r, size_t *where, char **scratch_out, unsigned char **copy_out)
{
	unsigned char *copy = malloc(b->len ? b->len : 1);
	char *scratch = malloc(b->len + 1);
	if (!copy || !scratch)
		abort();
	if (b->len)
		memcpy(copy, b->p, b->len);
	const char *bad = tapd_parse_reply(copy, b->len, scratch, r, where);
	if (bad && *where > b->len) {
		fprintf(stderr, "fault offset %zu past the end %zu\n", *where, b->len);
		exit(2);
	}
	if (!bad) {
		int good = r->ok ? r->queues >= 1 && r->queues <= TAPD_MAX_QUEUES && !r->code && !r->message
				 : r->code && r->message && strlen(r->code) >= 1 && strlen(r->code) <= 64 &&
					   strspn(r->code, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(r->code) &&
					   valid_utf8_no_nul(r->message) &&
					   r->code >= scratch && r->message >= scratch &&
					   r->message + strlen(r->message) < scratch + b->len + 1;
		if (!good) {
			fprintf(stderr, "accepted reply breaks an invariant: %.*s\n", (int)b->len, (const char *)b->p);
			exit(2);
		}
	}
	*scratch_out = scratch;
	*copy_out = copy;
	return bad;
}

static int one(void)
{
	struct buf b = { 0 };
	unsigned char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
		add(&b, chunk, n);
	struct tapd_reply r;
	size_t where;
	char *scratch;
	unsigned char *copy;
	const char *bad = parse(&b, &r, &where, &scratch, &copy);
	if (bad)
		printf("reject %s at %zu\n", bad, where);
	else if (r.ok)
		printf("ok queues=%ld\n", r.queues);
	else
		printf("error %s %s\n", r.code, r.message);
	free(scratch), free(copy), free(b.p);
	return 0;
}

static void put32(uint32_t v)
{
	unsigned char b[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v };
	fwrite(b, 1, 4, stdout);
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--one") == 0)
		return one();
	/* --corpus N: the inputs and verdicts on stdout, for a check against JSON.parse. */
	int corpus = argc == 3 && strcmp(argv[1], "--corpus") == 0;
	long total = argc >= 2 ? atol(argv[argc - 1]) : 100000;
	long counts[3] = { 0 }, accepted = 0, rejected = 0;
	for (long i = 0; i < total; i++) {
		struct buf b = { 0 };
		struct expect e;
		int kind = (int)below(3);
		counts[kind]++;
		if (kind == 2) {
			random_bytes(&b);
		} else {
			valid_reply(&b, &e);
			if (kind == 1)
				mutate(&b);
		}
		struct tapd_reply r;
		size_t where;
		char *scratch;
		unsigned char *copy;
		const char *bad = parse(&b, &r, &where, &scratch, &copy);
		if (kind == 0) {
			int same = !bad && r.ok == e.ok &&
				   (e.ok ? r.queues == e.queues
					 : strcmp(r.code, (char *)e.code.p) == 0 && strcmp(r.message, (char *)e.message.p) == 0);
			if (!same) {
				fprintf(stderr, "valid reply #%ld misread (%s at %zu): %.*s\n", i, bad ? bad : "wrong fields",
					bad ? where : 0, (int)b.len, (const char *)b.p);
				return 2;
			}
		}
		bad ? rejected++ : accepted++;
		if (corpus) {
			/* length, body, verdict (0 rejected, 1 lease, 2 error), then queues or the message */
			put32((uint32_t)b.len);
			if (b.len)
				fwrite(b.p, 1, b.len, stdout);
			putchar(bad ? 0 : r.ok ? 1 : 2);
			if (!bad && r.ok)
				putchar((int)r.queues);
			if (!bad && !r.ok) {
				put32((uint32_t)strlen(r.code));
				fputs(r.code, stdout);
				put32((uint32_t)strlen(r.message));
				fputs(r.message, stdout);
			}
		}
		if (kind != 2) {
			free(e.code.p);
			free(e.message.p);
		}
		free(scratch), free(copy), free(b.p);
	}
	if (corpus)
		return fflush(stdout) == 0 ? 0 : 2;
	printf("%ld replies: %ld valid, %ld mutated, %ld random; %ld accepted, %ld rejected\n", total, counts[0],
	       counts[1], counts[2], accepted, rejected);
	return 0;
}

/* The reply to an `open` request (docs/protocol.md), parsed strictly: see tapd-reply.c. */
#ifndef TAPD_REPLY_H
#define TAPD_REPLY_H

#include <stddef.h>

#define TAPD_MAX_QUEUES 16
/* Replies are at most 1 MiB (src/protocol/frame.ts MAX_REPLY_BYTES). */
#define TAPD_MAX_REPLY_BYTES (1024u * 1024u)

struct tapd_reply {
	int ok;              /* 1: a lease (and fds), 0: tapd said no */
	long queues;         /* ok: lease.queues, 1..TAPD_MAX_QUEUES */
	const char *code;    /* !ok: error.code, [a-z0-9_]{1,64}, NUL-terminated, in scratch */
	const char *message; /* !ok: error.message, valid UTF-8 without NUL, in scratch */
};

/*
 * Parses `len` bytes of reply body. `scratch` must hold at least len + 1 bytes: decoded strings
 * go there (never longer than their encoding, so nothing is ever cut short). Returns NULL and
 * fills *out on success; otherwise a static description of the first fault, with its byte
 * offset in *where.
 */
const char *tapd_parse_reply(const unsigned char *buf, size_t len, char *scratch,
			     struct tapd_reply *out, size_t *where);

#endif

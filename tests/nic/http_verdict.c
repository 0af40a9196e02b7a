/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http_verdict.c - prints what nic/http.h makes of each request read from stdin, one JSON line per
 * request, for the differential test against Node's llhttp (test_http_llhttp.js).
 * stdin: records of [u32 little-endian length][bytes]. stdout per record:
 *   {"rc":R,"m":HEX,"u":HEX,"v":11,"ka":1,"h":[[HEX,HEX],...],"b":HEX}   (fields after rc only when
 * R == 1) Limits: 8192 header bytes, 1 MiB body.
 */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>

static void hex(const void *p, size_t n)
{
	const unsigned char *s = p;

	putchar('"');
	for (size_t i = 0; i < n; i++)
		printf("%02x", s[i]);
	putchar('"');
}

int main(void)
{
	static struct http_req req;
	struct http_limits lim = {.max_header_bytes = 8192, .max_body_bytes = 1 << 20};
	struct http_parser p;
	unsigned char lenb[4];
	unsigned char *buf;
	size_t len;
	int rc;

	while (fread(lenb, 1, 4, stdin) == 4) {
		len = (size_t)lenb[0] | (size_t)lenb[1] << 8 | (size_t)lenb[2] << 16 |
		      (size_t)lenb[3] << 24;
		buf = malloc(len + 1);
		if (!buf || fread(buf, 1, len, stdin) != len)
			return 1;
		http_parser_reset(&p);
		rc = http_parse(&p, buf, len, &lim, &req);
		printf("{\"rc\":%d", rc);
		if (rc == HTTP_PARSE_DONE) {
			printf(",\"m\":");
			hex(req.method_str, req.method_len);
			printf(",\"u\":");
			hex(req.target, req.target_len);
			printf(",\"v\":%d,\"ka\":%d,\"h\":[", req.version, req.keep_alive);
			for (uint32_t i = 0; i < req.nheaders; i++) {
				printf(i ? ",[" : "[");
				hex(req.headers[i].name, req.headers[i].name_len);
				putchar(',');
				hex(req.headers[i].value, req.headers[i].value_len);
				putchar(']');
			}
			printf("],\"b\":");
			hex(req.body, req.content_length);
		}
		printf("}\n");
		free(buf);
	}
	return 0;
}

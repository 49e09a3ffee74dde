/* bench/dns_rtt.c: DNS answer delay, and whether the first connection to an answer gets through.
 *
 *   dns_rtt SERVER NAME COUNT [TCPPORT]
 *
 * Sends COUNT A queries for NAME to SERVER:53 over UDP, one at a time, and prints the time to
 * each answer in microseconds, one per line. With TCPPORT, connects to the first A record of
 * each answer right after it arrived (the resolve-then-connect of a real client) and counts
 * the refusals. The last line is "# ok <answers> fail <no answer> refused <refused connects>".
 * A query is a fresh socket (a fresh source port), as a stub resolver sends it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static size_t put_query(unsigned char *q, uint16_t id, const char *name)
{
	size_t n = 12;
	memset(q, 0, 12);
	q[0] = id >> 8, q[1] = id & 0xff;
	q[2] = 0x01; /* RD */
	q[5] = 1;    /* QDCOUNT */
	const char *p = name;
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);
		q[n++] = (unsigned char)len;
		memcpy(q + n, p, len);
		n += len;
		p += len + (dot ? 1 : 0);
	}
	q[n++] = 0;
	q[n++] = 0, q[n++] = 1; /* A */
	q[n++] = 0, q[n++] = 1; /* IN */
	return n;
}

/* Skips a (possibly compressed) name; returns the offset after it, or 0. */
static size_t skip_name(const unsigned char *m, size_t len, size_t at)
{
	while (at < len) {
		unsigned char l = m[at];
		if ((l & 0xc0) == 0xc0)
			return at + 2 <= len ? at + 2 : 0;
		if (l == 0)
			return at + 1;
		at += 1 + l;
	}
	return 0;
}

/* The first A record of an answer to query `id`, or -1. */
static int first_a(const unsigned char *m, size_t len, uint16_t id, struct in_addr *out)
{
	if (len < 12 || ((m[0] << 8) | m[1]) != id || (m[3] & 0x0f) != 0)
		return -1;
	unsigned qd = (m[4] << 8) | m[5], an = (m[6] << 8) | m[7];
	size_t at = 12;
	for (unsigned i = 0; i < qd; i++) {
		if (!(at = skip_name(m, len, at)) || at + 4 > len)
			return -1;
		at += 4;
	}
	for (unsigned i = 0; i < an; i++) {
		if (!(at = skip_name(m, len, at)) || at + 10 > len)
			return -1;
		unsigned type = (m[at] << 8) | m[at + 1], rdlen = (m[at + 8] << 8) | m[at + 9];
		at += 10;
		if (at + rdlen > len)
			return -1;
		if (type == 1 && rdlen == 4) {
			memcpy(out, m + at, 4);
			return 0;
		}
		at += rdlen;
	}
	return -1;
}

static int connect_ok(struct in_addr a, int port)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = a};
	int rc = connect(s, (struct sockaddr *)&sa, sizeof sa), ok = 0;
	if (rc == 0) {
		ok = 1;
	} else if (errno == EINPROGRESS) {
		struct pollfd p = {s, POLLOUT, 0};
		int err = 0;
		socklen_t el = sizeof err;
		if (poll(&p, 1, 1000) == 1 && getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el) == 0)
			ok = err == 0 || err == ECONNREFUSED; /* a RST from the host: it got there */
	}
	close(s);
	return ok;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: dns_rtt SERVER NAME COUNT [TCPPORT]\n");
		return 2;
	}
	struct sockaddr_in srv = {.sin_family = AF_INET, .sin_port = htons(53)};
	if (inet_pton(AF_INET, argv[1], &srv.sin_addr) != 1) {
		fprintf(stderr, "dns_rtt: bad server %s\n", argv[1]);
		return 2;
	}
	int count = atoi(argv[3]), port = argc > 4 ? atoi(argv[4]) : 0;
	int ok = 0, fail = 0, refused = 0;
	unsigned char q[512], r[4096];
	for (int i = 0; i < count; i++) {
		uint16_t id = (uint16_t)(i * 7919 + 1);
		size_t qn = put_query(q, id, argv[2]);
		int s = socket(AF_INET, SOCK_DGRAM, 0);
		if (s < 0 || connect(s, (struct sockaddr *)&srv, sizeof srv) < 0) {
			perror("dns_rtt: socket");
			return 1;
		}
		double t0 = now_us();
		ssize_t n = -1;
		if (send(s, q, qn, 0) == (ssize_t)qn) {
			struct pollfd p = {s, POLLIN, 0};
			if (poll(&p, 1, 1000) == 1)
				n = recv(s, r, sizeof r, 0);
		}
		double t1 = now_us();
		close(s);
		struct in_addr a;
		if (n <= 0 || first_a(r, (size_t)n, id, &a) != 0) {
			fail++;
			continue;
		}
		ok++;
		printf("%.1f\n", t1 - t0);
		if (port && !connect_ok(a, port))
			refused++;
	}
	printf("# ok %d fail %d refused %d\n", ok, fail, refused);
	return 0;
}

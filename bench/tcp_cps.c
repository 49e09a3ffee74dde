/* bench/tcp_cps.c: new TCP connections per second, for the datapath benchmark.
 *
 *   tcp_cps serve PORT                  accept and close, forever (IPv4 and IPv6)
 *   tcp_cps connect IP PORT SECONDS     connect/close in a loop; prints "<conns_per_s> <ok> <fail>"
 *
 * The client closes with SO_LINGER {1, 0} (a RST, no TIME_WAIT), so the ephemeral ports never
 * run out and every iteration is a brand new flow: SYN, ACK and RST leave through the output
 * hook, i.e. through the policy under test. One process, no spawning: the loop measures the
 * per-connection cost of the stack and the ruleset. A 0.2 s warm-up is not counted.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int serve(int port)
{
	int s = socket(AF_INET6, SOCK_STREAM, 0), zero = 0, one = 1;
	if (s < 0) { perror("socket"); return 1; }
	setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = in6addr_any};
	if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 4096) < 0) { perror("bind/listen"); return 1; }
	signal(SIGPIPE, SIG_IGN);
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c >= 0) close(c);
	}
}

static int client(const char *ip, int port, double secs)
{
	struct sockaddr_storage ss = {0};
	socklen_t len;
	struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET, a4->sin_port = htons(port), len = sizeof *a4;
	} else if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6, a6->sin6_port = htons(port), len = sizeof *a6;
	} else {
		fprintf(stderr, "bad address %s\n", ip);
		return 1;
	}
	struct linger lg = {1, 0};
	long ok = 0, fail = 0;
	int lasterr = 0;
	double start = now(), t0 = start + 0.2, end = t0 + secs, t;
	int counting = 0;
	while ((t = now()) < end) {
		if (!counting && t >= t0) { counting = 1; ok = fail = 0; t0 = t; end = t0 + secs; }
		int s = socket(ss.ss_family, SOCK_STREAM, 0);
		if (s < 0) { perror("socket"); return 1; }
		if (connect(s, (struct sockaddr *)&ss, len) == 0) {
			ok++;
			setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
		} else {
			fail++;
			lasterr = errno;
		}
		close(s);
	}
	double el = now() - t0;
	printf("%.1f %ld %ld\n", (double)ok / el, ok, fail);
	if (fail) fprintf(stderr, "tcp_cps: %ld failed connects (last: %s)\n", fail, strerror(lasterr));
	return ok > 0 && fail == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "serve")) return serve(atoi(argv[2]));
	if (argc == 5 && !strcmp(argv[1], "connect")) return client(argv[2], atoi(argv[3]), atof(argv[4]));
	fprintf(stderr, "usage: tcp_cps serve PORT | tcp_cps connect IP PORT SECONDS\n");
	return 2;
}

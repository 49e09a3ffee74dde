/* bench/measure.c: run one command and report what it cost.
 *
 *   measure OUTFILE CMD [ARG]...
 *
 * Runs CMD (stdin from /dev/null, stdout and stderr inherited), waits for it with wait4() and
 * appends one line to OUTFILE:
 *   <wall_s> <cpu_s> <user_s> <sys_s> <maxrss_kib> <exit_status>
 * wall: CLOCK_MONOTONIC from just before fork() to the reaped exit; cpu: user + system time of
 * CMD and every descendant it waited for; maxrss: the largest resident set among them (KiB).
 * Exit status of measure itself: that of CMD (128+signal if it was killed).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double tv(struct timeval t) { return (double)t.tv_sec + (double)t.tv_usec / 1e6; }

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: measure OUTFILE CMD [ARG]...\n");
		return 125;
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid_t pid = fork();
	if (pid < 0) {
		perror("measure: fork");
		return 125;
	}
	if (pid == 0) {
		int fd = open("/dev/null", O_RDONLY);
		if (fd >= 0) {
			dup2(fd, 0);
			close(fd);
		}
		execvp(argv[2], argv + 2);
		perror("measure: exec");
		_exit(127);
	}
	int st;
	struct rusage ru;
	if (wait4(pid, &st, 0, &ru) < 0) {
		perror("measure: wait4");
		return 125;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	FILE *f = fopen(argv[1], "a");
	if (!f) {
		perror("measure: output file");
		return 125;
	}
	fprintf(f, "%.6f %.6f %.6f %.6f %ld %d\n", wall, tv(ru.ru_utime) + tv(ru.ru_stime),
		tv(ru.ru_utime), tv(ru.ru_stime), ru.ru_maxrss, code);
	fclose(f);
	return code;
}

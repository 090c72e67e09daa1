/* syscall_loop: the program of trace-run's overhead benchmarks (bench/tracer.sh), linked
 * statically so that neither the dynamic loader nor libc's caching hides a system call.
 * It times itself, so the start-up of trace-run is no part of the figures.
 *
 *   syscall_loop [-n N] [-r ROUNDS] [-s] getppid        N raw getppid() calls
 *   syscall_loop [-n N] [-r ROUNDS] [-s] pread FILE     N pread() of 4 KiB at offset 0
 *   syscall_loop [-n N] [-r ROUNDS] [-s] open FILE      N times open + read all + close
 *
 * -s installs a one-instruction seccomp filter (SECCOMP_RET_ALLOW) first: the floor of
 * what any seccomp filter costs a system call, however short the filter.
 *
 * In FILE, "%d" stands for the iteration number modulo 1000 in three digits (000 to
 * 999): 1000 different files, so that trace-run's short-lived cache of remote file
 * contents does not answer the opens.
 *
 * getppid and pread are not intercepted by trace-run: they measure what the seccomp
 * filter costs every other system call. open is intercepted: with a path in the target
 * pod it is answered by trace-run: from the agent, or from its cache.
 *
 * Prints one line: "MODE n=N rounds=R ns=MEDIAN min_ns=MIN" (ns per iteration, median
 * and fastest of the rounds). Exit status 1 when a call fails, 2 on a usage error. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_ROUNDS 101

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* One round of n iterations; returns ns per iteration, or < 0 after printing why. */
static double round_getppid(long n)
{
	double t0 = now_ns();
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid); /* the raw call: no libc caching */
	return (now_ns() - t0) / (double)n;
}

static double round_pread(int fd, long n)
{
	static char buf[4096];
	double t0 = now_ns();
	for (long i = 0; i < n; i++) {
		if (pread(fd, buf, sizeof(buf), 0) < 0) {
			fprintf(stderr, "syscall_loop: pread: %s\n", strerror(errno));
			return -1;
		}
	}
	return (now_ns() - t0) / (double)n;
}

/* path with "%d" replaced by i % 1000 (or path itself without one) */
static const char *nth_path(const char *path, long i, char *out, size_t size)
{
	const char *mark = strstr(path, "%d");
	if (!mark)
		return path;
	snprintf(out, size, "%.*s%03ld%s", (int)(mark - path), path, i % 1000, mark + 2);
	return out;
}

static double round_open(const char *pattern, long n)
{
	static char buf[65536];
	char scratch[4096];
	double t0 = now_ns();
	for (long i = 0; i < n; i++) {
		const char *path = nth_path(pattern, i, scratch, sizeof(scratch));
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "syscall_loop: open %s: %s\n", path, strerror(errno));
			return -1;
		}
		ssize_t got;
		while ((got = read(fd, buf, sizeof(buf))) > 0)
			;
		close(fd);
		if (got < 0) {
			fprintf(stderr, "syscall_loop: read %s: %s\n", path, strerror(errno));
			return -1;
		}
	}
	return (now_ns() - t0) / (double)n;
}

static int allow_all_filter(void)
{
	struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
	struct sock_fprog prog = {.len = 1, .filter = allow};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
		fprintf(stderr, "syscall_loop: seccomp filter: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: syscall_loop [-n N] [-r ROUNDS] [-s] getppid | pread FILE | open FILE\n");
}

int main(int argc, char **argv)
{
	long n = 1000000;
	int rounds = 5, opt;
	int seccomp_floor = 0;
	while ((opt = getopt(argc, argv, "n:r:sh")) != -1) {
		switch (opt) {
		case 'n':
			n = atol(optarg);
			break;
		case 'r':
			rounds = atoi(optarg);
			break;
		case 's':
			seccomp_floor = 1;
			break;
		default:
			usage();
			return 2;
		}
	}
	if (optind >= argc || n <= 0 || rounds <= 0 || rounds > MAX_ROUNDS) {
		usage();
		return 2;
	}
	const char *mode = argv[optind];
	const char *path = optind + 1 < argc ? argv[optind + 1] : NULL;
	int fd = -1;
	if (strcmp(mode, "getppid") != 0) {
		if (!path || (strcmp(mode, "pread") != 0 && strcmp(mode, "open") != 0)) {
			usage();
			return 2;
		}
		if (strcmp(mode, "pread") == 0) {
			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				fprintf(stderr, "syscall_loop: open %s: %s\n", path,
					strerror(errno));
				return 1;
			}
		}
	}
	if (seccomp_floor && allow_all_filter() < 0)
		return 1;
	double samples[MAX_ROUNDS];
	for (int r = 0; r < rounds; r++) {
		double ns;
		if (fd >= 0)
			ns = round_pread(fd, n);
		else if (path)
			ns = round_open(path, n);
		else
			ns = round_getppid(n);
		if (ns < 0)
			return 1;
		samples[r] = ns;
	}
	qsort(samples, (size_t)rounds, sizeof(samples[0]), cmp_double);
	printf("%s n=%ld rounds=%d ns=%.1f min_ns=%.1f\n", mode, n, rounds, samples[rounds / 2],
	       samples[0]);
	return 0;
}

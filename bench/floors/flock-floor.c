/*
 * The host tier's kernel floor: flock(2) on a lock file, measured the way
 * issue 13 measures latchkey's host locks. Built by bench/host-floors.ts with
 * `cc -O2` when a C compiler exists (skipped with a message otherwise).
 *
 *   flock-floor contend DIR PROCS ITERS
 *     PROCS processes, forked here, each opening DIR/lock and DIR/counter
 *     itself (flock locks belong to an open file description, so an
 *     inherited descriptor would share the lock). All start together on a
 *     pipe barrier; each does ITERS × { flock(LOCK_EX); pread counter;
 *     +1; pwrite counter; stamp enter/exit; flock(LOCK_UN) }. Stamps are
 *     CLOCK_MONOTONIC (one clock for every process) in a shared mapping.
 *     Prints one JSON line: ops/s over [go, last unlock], the final
 *     counter and whether it is exact, whether two sections overlapped,
 *     each process's share of the grants, the gap from one process's exit
 *     to the next process's enter at every change of holder (p50/p99,
 *     µs), and how many such changes there were.
 *
 *   flock-floor handover DIR ROUNDS
 *     Hand-over to a parked waiter: process A holds the lock, B calls
 *     flock(LOCK_EX) and blocks; A waits 2-5 ms (B is asleep in the
 *     kernel), stamps, unlocks; B stamps as flock returns. Prints p50/p99
 *     of B's stamp − A's stamp, µs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "flock-floor: %s: %s\n", what, strerror(errno));
  exit(70);
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct(int64_t *v, size_t n, double p) {
  if (n == 0) return 0;
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return (double)v[i] / 1000.0;
}

static int open_or_die(const char *dir, const char *file, int flags) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, file);
  int fd = open(path, flags | O_CLOEXEC, 0600);
  if (fd < 0) die(path);
  return fd;
}

struct stamp { int64_t enter, exit; int32_t proc, pad; };

static int contend(const char *dir, int procs, int iters) {
  size_t n = (size_t)procs * (size_t)iters;
  struct stamp *log = mmap(NULL, n * sizeof *log, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  int64_t *ends = mmap(NULL, (size_t)procs * sizeof *ends, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (log == MAP_FAILED || ends == MAP_FAILED) die("mmap");
  int c = open_or_die(dir, "counter", O_RDWR | O_CREAT | O_TRUNC);
  uint64_t zero = 0;
  if (pwrite(c, &zero, sizeof zero, 0) != sizeof zero) die("pwrite counter");
  close(c);
  close(open_or_die(dir, "lock", O_RDWR | O_CREAT));
  int ready[2], go[2];
  if (pipe(ready) || pipe(go)) die("pipe");
  for (int p = 0; p < procs; p++) {
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid > 0) continue;
    close(ready[0]);
    close(go[1]);
    int lock = open_or_die(dir, "lock", O_RDWR);
    int counter = open_or_die(dir, "counter", O_RDWR);
    char b = 'r';
    if (write(ready[1], &b, 1) != 1) die("ready");
    if (read(go[0], &b, 1) != 0) die("go"); // EOF: the parent closed it, everyone starts
    for (int i = 0; i < iters; i++) {
      if (flock(lock, LOCK_EX)) die("flock");
      struct stamp *s = &log[(size_t)p * iters + i];
      s->enter = now_ns();
      uint64_t v;
      if (pread(counter, &v, sizeof v, 0) != sizeof v) die("pread");
      v++;
      if (pwrite(counter, &v, sizeof v, 0) != sizeof v) die("pwrite");
      s->proc = p;
      s->exit = now_ns();
      if (flock(lock, LOCK_UN)) die("unlock");
    }
    ends[p] = now_ns();
    _exit(0);
  }
  close(ready[1]);
  close(go[0]);
  for (int p = 0; p < procs; p++) {
    char b;
    if (read(ready[0], &b, 1) != 1) die("ready");
  }
  int64_t start = now_ns();
  close(go[1]);
  for (int p = 0; p < procs; p++) {
    int st;
    if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) { fprintf(stderr, "flock-floor: a child failed\n"); return 70; }
  }
  int64_t end = start;
  for (int p = 0; p < procs; p++) if (ends[p] > end) end = ends[p];
  c = open_or_die(dir, "counter", O_RDONLY);
  uint64_t final = 0;
  if (pread(c, &final, sizeof final, 0) != sizeof final) die("pread final");
  close(c);
  /* Merge the sections by enter time: overlap check, hand-over gaps, shares. */
  struct stamp *sorted = malloc(n * sizeof *sorted);
  memcpy(sorted, log, n * sizeof *sorted);
  for (size_t i = 1; i < n; i++) { /* insertion sort: n is small and mostly sorted per process */
    struct stamp t = sorted[i];
    size_t j = i;
    while (j > 0 && sorted[j - 1].enter > t.enter) { sorted[j] = sorted[j - 1]; j--; }
    sorted[j] = t;
  }
  int overlap = 0;
  int64_t *gaps = malloc(n * sizeof *gaps);
  size_t ngaps = 0;
  for (size_t i = 1; i < n; i++) {
    if (sorted[i].enter < sorted[i - 1].exit) overlap = 1;
    if (sorted[i].proc != sorted[i - 1].proc) gaps[ngaps++] = sorted[i].enter - sorted[i - 1].exit;
  }
  qsort(gaps, ngaps, sizeof *gaps, cmp_i64);
  double secs = (double)(end - start) / 1e9;
  printf("{\"ops\":%zu,\"seconds\":%.6f,\"opsPerSec\":%.1f,\"final\":%llu,\"exact\":%s,\"overlap\":%s,"
         "\"changes\":%zu,\"handoverP50Us\":%.2f,\"handoverP99Us\":%.2f}\n",
         n, secs, (double)n / secs, (unsigned long long)final, final == n ? "true" : "false",
         overlap ? "true" : "false", ngaps, pct(gaps, ngaps, 0.5), pct(gaps, ngaps, 0.99));
  return 0;
}

static void sleep_us(long us) {
  struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
  while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

static int handover(const char *dir, int rounds) {
  close(open_or_die(dir, "lock", O_RDWR | O_CREAT));
  int64_t *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) die("mmap");
  int toB[2], toA[2];
  if (pipe(toB) || pipe(toA)) die("pipe");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    int lock = open_or_die(dir, "lock", O_RDWR);
    char b;
    for (int r = 0; r < rounds; r++) {
      if (read(toB[0], &b, 1) != 1) die("B read");
      if (write(toA[1], &b, 1) != 1) die("B write"); // about to block
      if (flock(lock, LOCK_EX)) die("B flock");
      shared[1] = now_ns();
      if (flock(lock, LOCK_UN)) die("B unlock");
      if (write(toA[1], &b, 1) != 1) die("B write");
    }
    _exit(0);
  }
  int lock = open_or_die(dir, "lock", O_RDWR);
  int64_t *lat = malloc((size_t)rounds * sizeof *lat);
  unsigned seed = 12345;
  char b = 'x';
  for (int r = 0; r < rounds; r++) {
    if (flock(lock, LOCK_EX)) die("A flock");
    if (write(toB[1], &b, 1) != 1) die("A write");
    if (read(toA[0], &b, 1) != 1) die("A read");
    sleep_us(2000 + (long)(rand_r(&seed) % 3000)); // B is parked in the kernel by now
    int64_t t0 = now_ns();
    if (flock(lock, LOCK_UN)) die("A unlock");
    if (read(toA[0], &b, 1) != 1) die("A read");
    lat[r] = shared[1] - t0;
  }
  int st;
  waitpid(pid, &st, 0);
  qsort(lat, (size_t)rounds, sizeof *lat, cmp_i64);
  printf("{\"rounds\":%d,\"p50Us\":%.2f,\"p99Us\":%.2f}\n", rounds, pct(lat, (size_t)rounds, 0.5), pct(lat, (size_t)rounds, 0.99));
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 5 && strcmp(argv[1], "contend") == 0) return contend(argv[2], atoi(argv[3]), atoi(argv[4]));
  if (argc == 4 && strcmp(argv[1], "handover") == 0) return handover(argv[2], atoi(argv[3]));
  fprintf(stderr, "usage: flock-floor contend DIR PROCS ITERS | flock-floor handover DIR ROUNDS\n");
  return 64;
}

/* Diagnostic only: LD_PRELOAD shim setting TCP_NODELAY on every accepted socket, to test whether
 * Nagle + delayed ACKs on gRPC server-side sockets explain the cluster latency (see
 * docs/benchmarks.md, "Cluster").  gcc -O2 -shared -fPIC -o /tmp/libnodelay.so benches/diag/nodelay.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
static void set(int fd) {
  if (fd >= 0) { int one = 1; setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); }
}
int accept4(int s, struct sockaddr *a, socklen_t *l, int f) {
  static int (*real)(int, struct sockaddr *, socklen_t *, int);
  if (!real) real = dlsym(RTLD_NEXT, "accept4");
  int fd = real(s, a, l, f); set(fd); return fd;
}
int accept(int s, struct sockaddr *a, socklen_t *l) {
  static int (*real)(int, struct sockaddr *, socklen_t *);
  if (!real) real = dlsym(RTLD_NEXT, "accept");
  int fd = real(s, a, l); set(fd); return fd;
}

/*
 * iommusim's /dev/iommu for an unmodified program: an LD_PRELOAD library.
 *
 * open("/dev/iommu") gives the program an AF_UNIX SOCK_SEQPACKET socket connected to the
 * iommusim server named by $IOMMUSIM_SOCKET; every file iommufd hands out (fault queue,
 * vEVENTQ, selftest access) is another such socket. A socket is the program's fd so that
 * close, dup and fork keep their kernel semantics: the server sees the last close as EOF,
 * which is the file's release. An fd is "ours" when its peer is the server's path.
 *
 * ioctl, mmap/munmap, read/write and poll on our fds become requests (struct req); the
 * server reads and writes the program's memory itself (process_vm_readv/writev) and answers
 * with a struct rep. While serving an ioctl the server may call back (rep.op != REP_DONE):
 * install a new file at the lowest free fd, say which socket an fd is, or close an fd.
 * fopen of /proc/PID/status adds to its VmPin and VmLck what the model's iommufd pins and
 * locks for that process (OP_STATUS): the host kernel does not see those pins, the model is
 * the kernel that took them.
 * Keep the numbers below equal to iommusim/hostproc/protocol.py (a test compares them).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define OP_OPEN 1
#define OP_FILE 2
#define OP_IOCTL 3
#define OP_MMAP 4
#define OP_MUNMAP 5
#define OP_READ 6
#define OP_WRITE 7
#define OP_POLL 8
#define OP_REPLY 9
#define OP_STATUS 10

#define REP_DONE 0
#define REP_INSTALL 1
#define REP_LOOKUP 2
#define REP_CLOSE 3

struct req {
	uint32_t op;
	uint32_t pid;
	uint64_t a, b, c, d;
};

struct rep {
	int64_t ret;
	int32_t err;
	uint32_t op;
	uint64_t a, b;
};

#define MAX_MAPS 256
struct map {
	void *addr;
	size_t len;
	int sock; /* a dup of the iommufd: the mapping holds the file, as a vma does */
	pid_t pid;
	uint64_t offset;
};

static struct sockaddr_un server;
static socklen_t server_len;
static struct map maps[MAX_MAPS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_ioctl)(int, unsigned long, ...);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static int (*real_munmap)(void *, size_t);
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_poll)(struct pollfd *, nfds_t, int);
static int (*real_ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
static FILE *(*real_fopen)(const char *, const char *);
static FILE *(*real_fopen64)(const char *, const char *);

__attribute__((constructor)) static void init(void)
{
	const char *path = getenv("IOMMUSIM_SOCKET");

	real_open = dlsym(RTLD_NEXT, "open");
	real_openat = dlsym(RTLD_NEXT, "openat");
	real_ioctl = dlsym(RTLD_NEXT, "ioctl");
	real_mmap = dlsym(RTLD_NEXT, "mmap");
	real_munmap = dlsym(RTLD_NEXT, "munmap");
	real_read = dlsym(RTLD_NEXT, "read");
	real_write = dlsym(RTLD_NEXT, "write");
	real_poll = dlsym(RTLD_NEXT, "poll");
	real_ppoll = dlsym(RTLD_NEXT, "ppoll");
	real_fopen = dlsym(RTLD_NEXT, "fopen");
	real_fopen64 = dlsym(RTLD_NEXT, "fopen64");
	if (!path || strlen(path) >= sizeof(server.sun_path))
		return;
	server.sun_family = AF_UNIX;
	strcpy(server.sun_path, path);
	server_len = offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1;
}

static int ours(int fd)
{
	struct sockaddr_un peer;
	socklen_t len = sizeof(peer);

	if (fd < 0 || !server_len)
		return 0;
	if (getpeername(fd, (struct sockaddr *)&peer, &len) || peer.sun_family != AF_UNIX)
		return 0;
	return strncmp(peer.sun_path, server.sun_path, sizeof(peer.sun_path)) == 0;
}

/* A socket at the lowest free fd, bound to an abstract name the server learns on accept. */
static int connect_server(int cloexec)
{
	sa_family_t fam = AF_UNIX;
	int s = socket(AF_UNIX, SOCK_SEQPACKET | (cloexec ? SOCK_CLOEXEC : 0), 0);

	if (s < 0)
		return -1;
	if (bind(s, (struct sockaddr *)&fam, sizeof(fam)) ||
	    connect(s, (struct sockaddr *)&server, server_len)) {
		int e = errno;

		close(s);
		errno = e == ECONNREFUSED || e == ENOENT ? ENODEV : e;
		return -1;
	}
	return s;
}

static int send_req(int s, uint32_t op, uint64_t a, uint64_t b, uint64_t c, uint64_t d,
		    const void *data, size_t n)
{
	struct req r = { op, (uint32_t)getpid(), a, b, c, d };
	struct iovec iov[2] = { { &r, sizeof(r) }, { (void *)data, n } };
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = n ? 2 : 1 };

	return sendmsg(s, &m, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

/* Answer the server's call-backs until its final answer; returns it, errno set on error. */
static long transact(int s, uint32_t op, uint64_t a, uint64_t b, uint64_t c, uint64_t d,
		     const void *data, size_t n, struct rep *out)
{
	struct rep rep;

	pthread_mutex_lock(&lock);
	if (send_req(s, op, a, b, c, d, data, n))
		goto broken;
	for (;;) {
		ssize_t got = recv(s, &rep, sizeof(rep), 0);

		if (got != sizeof(rep))
			goto broken;
		if (rep.op == REP_DONE)
			break;
		if (rep.op == REP_INSTALL) {
			int f = connect_server(rep.b != 0);

			if (f >= 0 && send_req(f, OP_FILE, rep.a, 0, 0, 0, NULL, 0)) {
				close(f);
				f = -1;
			}
			if (send_req(s, OP_REPLY, f < 0 ? (uint64_t)-errno : (uint64_t)f, 0, 0, 0,
				     NULL, 0))
				goto broken;
		} else if (rep.op == REP_LOOKUP) {
			struct sockaddr_un me;
			socklen_t len = sizeof(me);
			int fd = (int)rep.a;

			if (!ours(fd) || getsockname(fd, (struct sockaddr *)&me, &len))
				len = 0;
			else
				len -= offsetof(struct sockaddr_un, sun_path);
			if (send_req(s, OP_REPLY, len, 0, 0, 0, me.sun_path, len))
				goto broken;
		} else if (rep.op == REP_CLOSE) {
			close((int)rep.a);
			if (send_req(s, OP_REPLY, 0, 0, 0, 0, NULL, 0))
				goto broken;
		}
	}
	pthread_mutex_unlock(&lock);
	if (out)
		*out = rep;
	if (rep.ret < 0) {
		errno = rep.err;
		return -1;
	}
	return (long)rep.ret;
broken:
	pthread_mutex_unlock(&lock);
	errno = EIO;
	return -1;
}

static int is_dev_iommu(const char *path)
{
	return path && strcmp(path, "/dev/iommu") == 0 && server_len;
}

static int open_iommu(int flags)
{
	int s = connect_server(flags & O_CLOEXEC);

	if (s < 0)
		return -1;
	if (transact(s, OP_OPEN, (uint64_t)flags, 0, 0, 0, NULL, 0, NULL) < 0) {
		int e = errno;

		close(s);
		errno = e;
		return -1;
	}
	return s;
}

/* The pid of "/proc/N/status" or "/proc/self/status", else 0. */
static pid_t status_pid(const char *path)
{
	const char *p;
	char *end;
	long pid;

	if (!path || !server_len || strncmp(path, "/proc/", 6))
		return 0;
	p = path + 6;
	if (!strcmp(p, "self/status"))
		return getpid();
	pid = strtol(p, &end, 10);
	return end != p && !strcmp(end, "/status") && pid > 0 ? (pid_t)pid : 0;
}

/* The status file with the model's pinned and locked pages added (in kB). */
static FILE *status_file(const char *path, pid_t pid, FILE *(*real)(const char *, const char *))
{
	long kb_per_page = sysconf(_SC_PAGESIZE) / 1024;
	FILE *in = real(path, "r");
	struct rep rep;
	char line[512];
	int s, out;

	if (!in || (s = connect_server(1)) < 0)
		return in;
	if (transact(s, OP_STATUS, (uint64_t)pid, 0, 0, 0, NULL, 0, &rep) < 0) {
		close(s);
		return in;
	}
	close(s);
	out = memfd_create("iommusim-status", MFD_CLOEXEC);
	if (out < 0)
		return in;
	while (fgets(line, sizeof(line), in)) {
		long kb;

		if (!strncmp(line, "VmPin:", 6) && sscanf(line + 6, "%ld", &kb) == 1)
			snprintf(line, sizeof(line), "VmPin:\t%8ld kB\n", kb + (long)rep.a * kb_per_page);
		else if (!strncmp(line, "VmLck:", 6) && sscanf(line + 6, "%ld", &kb) == 1)
			snprintf(line, sizeof(line), "VmLck:\t%8ld kB\n", kb + (long)rep.b * kb_per_page);
		if (real_write(out, line, strlen(line)) < 0)
			break;
	}
	fclose(in);
	lseek(out, 0, SEEK_SET);
	return fdopen(out, "r");
}

FILE *fopen(const char *path, const char *mode)
{
	pid_t pid = mode && mode[0] == 'r' ? status_pid(path) : 0;

	return pid ? status_file(path, pid, real_fopen) : real_fopen(path, mode);
}

FILE *fopen64(const char *path, const char *mode)
{
	pid_t pid = mode && mode[0] == 'r' ? status_pid(path) : 0;

	return pid ? status_file(path, pid, real_fopen64) : real_fopen64(path, mode);
}

static mode_t mode_arg(int flags, va_list ap)
{
	return (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
}

int open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	if (is_dev_iommu(path))
		return open_iommu(flags);
	va_start(ap, flags);
	mode = mode_arg(flags, ap);
	va_end(ap);
	return real_open(path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	if (is_dev_iommu(path))
		return open_iommu(flags);
	va_start(ap, flags);
	mode = mode_arg(flags, ap);
	va_end(ap);
	return real_open(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	if (is_dev_iommu(path))
		return open_iommu(flags);
	va_start(ap, flags);
	mode = mode_arg(flags, ap);
	va_end(ap);
	return real_openat(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	if (is_dev_iommu(path))
		return open_iommu(flags);
	va_start(ap, flags);
	mode = mode_arg(flags, ap);
	va_end(ap);
	return real_openat(dirfd, path, flags, mode);
}

/* The fortified variants (_FORTIFY_SOURCE) take no mode. */
int __open_2(const char *path, int flags)
{
	return is_dev_iommu(path) ? open_iommu(flags) : real_open(path, flags);
}

int __open64_2(const char *path, int flags)
{
	return __open_2(path, flags);
}

int __openat_2(int dirfd, const char *path, int flags)
{
	return is_dev_iommu(path) ? open_iommu(flags) : real_openat(dirfd, path, flags);
}

int __openat64_2(int dirfd, const char *path, int flags)
{
	return __openat_2(dirfd, path, flags);
}

int ioctl(int fd, unsigned long request, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (!ours(fd))
		return real_ioctl(fd, request, arg);
	return (int)transact(fd, OP_IOCTL, request, (uint64_t)(uintptr_t)arg, 0, 0, NULL, 0,
			     NULL);
}

/*
 * mmap of the iommufd: an anonymous shared mapping placed as asked, which the server fills
 * with the model's physical pages of the region; the server's errno otherwise.
 */
/*
 * MAP_HUGETLB anonymous memory when the host has no huge pages reserved: ordinary pages,
 * the mapping aligned to the huge page size and its length rounded up to it. The model
 * mirrors a process's pages at physical addresses that follow its virtual ones, so such a
 * mapping is, for the IOMMU, exactly the physically contiguous aligned memory a huge page
 * is; the program sees the memory it asked for.
 */
static void *mmap_hugetlb_fallback(void *addr, size_t len, int prot, int flags)
{
	int shift = (flags >> MAP_HUGE_SHIFT) & MAP_HUGE_MASK;
	size_t huge = (size_t)1 << (shift ? shift : 21);
	size_t size = (len + huge - 1) & ~(huge - 1);
	char *p, *aligned;

	flags &= ~(MAP_HUGETLB | (MAP_HUGE_MASK << MAP_HUGE_SHIFT));
	if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE))
		return real_mmap(addr, size, prot, flags, -1, 0);
	p = real_mmap(NULL, size + huge, prot, flags, -1, 0);
	if (p == MAP_FAILED)
		return p;
	aligned = (char *)(((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1));
	if (aligned > p)
		real_munmap(p, (size_t)(aligned - p));
	if (aligned + size < p + size + huge)
		real_munmap(aligned + size, (size_t)(p + size + huge - (aligned + size)));
	return aligned;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t offset)
{
	int place = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE);
	void *p;
	int i, e;

	if ((flags & MAP_ANONYMOUS) && (flags & MAP_HUGETLB) && server_len) {
		p = real_mmap(addr, len, prot, flags, fd, offset);
		if (p != MAP_FAILED || errno != ENOMEM)
			return p;
		return mmap_hugetlb_fallback(addr, len, prot, flags);
	}
	if ((flags & MAP_ANONYMOUS) || !ours(fd))
		return real_mmap(addr, len, prot, flags, fd, offset);
	p = real_mmap(addr, len, PROT_READ | PROT_WRITE, place | MAP_SHARED | MAP_ANONYMOUS, -1,
		      0);
	if (p == MAP_FAILED)
		return p;
	if (transact(fd, OP_MMAP, (uint64_t)offset, len, (uint64_t)prot, (uint64_t)flags,
		     &p, sizeof(p), NULL) < 0 ||
	    mprotect(p, len, prot)) {
		e = errno;
		real_munmap(p, len);
		errno = e;
		return MAP_FAILED;
	}
	pthread_mutex_lock(&lock);
	for (i = 0; i < MAX_MAPS && maps[i].addr; i++)
		;
	if (i < MAX_MAPS) {
		maps[i].addr = p;
		maps[i].len = len;
		maps[i].sock = fcntl(fd, F_DUPFD_CLOEXEC, 512);
		maps[i].pid = getpid();
		maps[i].offset = (uint64_t)offset;
	}
	pthread_mutex_unlock(&lock);
	return p;
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t offset)
{
	return mmap(addr, len, prot, flags, fd, offset);
}

int munmap(void *addr, size_t len)
{
	int rc = real_munmap(addr, len);
	int i;

	if (rc)
		return rc;
	for (i = 0; i < MAX_MAPS; i++) {
		struct map m = maps[i];

		if (!m.addr || (char *)addr > (char *)m.addr ||
		    (char *)addr + len < (char *)m.addr + m.len)
			continue;
		maps[i].addr = NULL;
		if (m.pid == getpid() && m.sock >= 0)
			transact(m.sock, OP_MUNMAP, m.offset, m.len, 0, 0, NULL, 0, NULL);
		if (m.sock >= 0)
			close(m.sock);
	}
	return 0;
}

ssize_t read(int fd, void *buf, size_t count)
{
	if (!ours(fd))
		return real_read(fd, buf, count);
	return transact(fd, OP_READ, count, (uint64_t)(uintptr_t)buf, 0, 0, NULL, 0, NULL);
}

ssize_t __read_chk(int fd, void *buf, size_t count, size_t buflen)
{
	(void)buflen;
	return read(fd, buf, count);
}

ssize_t write(int fd, const void *buf, size_t count)
{
	if (!ours(fd))
		return real_write(fd, buf, count);
	return transact(fd, OP_WRITE, count, (uint64_t)(uintptr_t)buf, 0, 0, NULL, 0, NULL);
}

/*
 * poll: our fds are asked for their revents; the others go to the real poll, with no wait
 * when one of ours is ready (the model changes only when a program calls it).
 */
static int poll_mixed(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
		      const sigset_t *mask)
{
	struct pollfd *copy;
	struct timespec zero = { 0, 0 };
	int ready = 0, rc;
	nfds_t i;

	copy = calloc(nfds ? nfds : 1, sizeof(*copy));
	if (!copy) {
		errno = ENOMEM;
		return -1;
	}
	for (i = 0; i < nfds; i++) {
		copy[i] = fds[i];
		if (!ours(fds[i].fd))
			continue;
		long ev = transact(fds[i].fd, OP_POLL, 0, 0, 0, 0, NULL, 0, NULL);

		copy[i].fd = -1;
		fds[i].revents = ev < 0 ? POLLERR : (short)(ev & (fds[i].events | POLLERR | POLLHUP));
		ready += fds[i].revents != 0;
	}
	rc = real_ppoll(copy, nfds, ready ? &zero : tmo, mask);
	for (i = 0; i < nfds; i++)
		if (copy[i].fd >= 0 || fds[i].fd < 0)
			fds[i].revents = copy[i].revents;
	free(copy);
	return rc < 0 ? rc : rc + ready;
}

static int has_ours(struct pollfd *fds, nfds_t nfds)
{
	nfds_t i;

	for (i = 0; i < nfds; i++)
		if (ours(fds[i].fd))
			return 1;
	return 0;
}

int poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
	struct timespec t = { timeout / 1000, (timeout % 1000) * 1000000L };

	if (!has_ours(fds, nfds))
		return real_poll(fds, nfds, timeout);
	return poll_mixed(fds, nfds, timeout < 0 ? NULL : &t, NULL);
}

int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout, size_t fdslen)
{
	(void)fdslen;
	return poll(fds, nfds, timeout);
}

int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo, const sigset_t *mask)
{
	if (!has_ours(fds, nfds))
		return real_ppoll(fds, nfds, tmo, mask);
	return poll_mixed(fds, nfds, tmo, mask);
}

int __ppoll_chk(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
		const sigset_t *mask, size_t fdslen)
{
	(void)fdslen;
	return ppoll(fds, nfds, tmo, mask);
}

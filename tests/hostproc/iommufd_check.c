/*
 * The transport's in-repo check: a plain program that opens /dev/iommu, allocates an IOAS,
 * maps a buffer into it, reads the mapping back through IOMMU_IOAS_IOVA_RANGES' neighbour
 * (an UNMAP of the mapped range reports its length), checks the errno of a bad call, and
 * exits 0 when every step answered as the kernel would. The structs are Linux 7.3
 * include/uapi/linux/iommufd.h's, written out so no kernel headers are needed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define IOMMUFD_TYPE ';'
#define IOMMU_DESTROY _IO(IOMMUFD_TYPE, 0x80)
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, 0x81)
#define IOMMU_IOAS_MAP _IO(IOMMUFD_TYPE, 0x85)
#define IOMMU_IOAS_UNMAP _IO(IOMMUFD_TYPE, 0x86)
#define IOMMU_IOAS_MAP_FIXED_IOVA (1 << 0)
#define IOMMU_IOAS_MAP_WRITEABLE (1 << 1)
#define IOMMU_IOAS_MAP_READABLE (1 << 2)

struct iommu_destroy { uint32_t size, id; };
struct iommu_ioas_alloc { uint32_t size, flags, out_ioas_id; };
struct iommu_ioas_map {
	uint32_t size, flags, ioas_id, __reserved;
	uint64_t user_va, length, iova;
};
struct iommu_ioas_unmap { uint32_t size, ioas_id; uint64_t iova, length; };

#define CHECK(cond, what)                                                           \
	do {                                                                        \
		if (!(cond)) {                                                      \
			fprintf(stderr, "iommufd_check: %s failed (errno %d: %s)\n", \
				what, errno, strerror(errno));                      \
			return 1;                                                   \
		}                                                                   \
	} while (0)

int main(void)
{
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	struct iommu_ioas_map map = { .size = sizeof(map) };
	struct iommu_ioas_unmap unmap = { .size = sizeof(unmap) };
	struct iommu_destroy destroy = { .size = sizeof(destroy), .id = 9999 };
	size_t len = 4 * 4096;
	void *buf;
	int fd;

	fd = open("/dev/iommu", O_RDWR);
	CHECK(fd >= 0, "open /dev/iommu");
	CHECK(ioctl(fd, IOMMU_IOAS_ALLOC, &alloc) == 0, "IOMMU_IOAS_ALLOC");
	CHECK(alloc.out_ioas_id != 0, "IOAS id");
	buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(buf != MAP_FAILED, "mmap");
	memset(buf, 0xa5, len);
	map.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
		    IOMMU_IOAS_MAP_WRITEABLE;
	map.ioas_id = alloc.out_ioas_id;
	map.user_va = (uintptr_t)buf;
	map.length = len;
	map.iova = 0x100000;
	CHECK(ioctl(fd, IOMMU_IOAS_MAP, &map) == 0, "IOMMU_IOAS_MAP");
	/* The same IOVA again: the area is taken. */
	CHECK(ioctl(fd, IOMMU_IOAS_MAP, &map) == -1 && errno == EEXIST, "EEXIST");
	/* No such object. */
	CHECK(ioctl(fd, IOMMU_DESTROY, &destroy) == -1 && errno == ENOENT, "ENOENT");
	/* A size below the struct's first version. */
	destroy.size = 4;
	CHECK(ioctl(fd, IOMMU_DESTROY, &destroy) == -1 && errno == EINVAL, "EINVAL");
	unmap.ioas_id = alloc.out_ioas_id;
	unmap.iova = map.iova;
	unmap.length = len;
	CHECK(ioctl(fd, IOMMU_IOAS_UNMAP, &unmap) == 0 && unmap.length == len, "IOAS_UNMAP");
	/* A dup keeps the file; fork shares it; the last close releases it. */
	int fd2 = dup(fd);
	CHECK(fd2 >= 0, "dup");
	CHECK(close(fd) == 0, "close");
	destroy.size = sizeof(destroy);
	destroy.id = alloc.out_ioas_id;
	CHECK(ioctl(fd2, IOMMU_DESTROY, &destroy) == 0, "IOMMU_DESTROY via dup");
	CHECK(read(fd2, buf, 8) == -1 && errno == EINVAL, "read of the iommufd");
	CHECK(close(fd2) == 0, "close dup");
	printf("iommufd_check: ok\n");
	return 0;
}

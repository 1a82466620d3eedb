/* tools — what a daemon tells the service manager that runs it (top layer).
 *
 * Owns: the sd_notify protocol, and whether stderr is the journal.
 *
 * sd_notify (sd_notify(3), "the notify protocol"): one datagram of
 * newline-separated VAR=value lines ("READY=1", "STOPPING=1", "STATUS=...",
 * "MAINPID=N") sent to the AF_UNIX socket $NOTIFY_SOCKET names: a path, or
 * "@name" for an abstract socket.  systemd sets it for Type=notify units.
 * The protocol is this small and stable, so it is written here rather than
 * linking libsystemd for one call.
 *
 * The journal: a unit's stderr is a stream to the journal when
 * $JOURNAL_STREAM ("DEV:INODE") names stderr's device and inode; a line
 * there may then begin with its syslog priority, "<3>" for an error
 * (sd-daemon(3)).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "tools.h"

int tools_notify(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = path ? strlen(path) : 0;
	int fd, rc = 0;

	if (!len)
		return 0;
	if ((path[0] != '/' && path[0] != '@') || len >= sizeof sa.sun_path)
		return -EAFNOSUPPORT; /* vsock:..., or too long for a unix address */
	memcpy(sa.sun_path, path, len);
	if (path[0] == '@')
		sa.sun_path[0] = '\0';
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (const struct sockaddr *)&sa,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

bool tools_notify_journal(void)
{
	const char *s = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!s || sscanf(s, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st))
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

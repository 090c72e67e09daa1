/* relay: the splice relay, hermit's byte mover. trace-agent relays every stream it
 * serves through it, and trace-run's local proxy relays redirected connections the
 * same way; it lives apart so that neither side links the other.
 *
 * One thread with an epoll loop moves bytes between pairs of fds, and frames UDP
 * datagrams. Bulk transfers go with splice() through pipes (no user-space copy); small
 * messages (a read that does not fill 16 KiB) with one recv() and one send() through
 * the thread's buffer, which costs less than two splices. Per stream it keeps ~200 bytes
 * and its own fds; pipes are pooled and held only while bytes are in flight (at most 32
 * idle pipes are kept for reuse). The thread is created with the caller's signal mask:
 * block the signals it must not take (a signalfd user) around relay_create. */
#ifndef HERMIT_RELAY_H
#define HERMIT_RELAY_H

#include <stdatomic.h>
#include <stdint.h>

#include "util/util.h"

/* bytes_out counts bytes from the client delivered to the remote side, bytes_in bytes
 * delivered to the client; streams is incremented by a successful add and decremented
 * when that stream is closed. */
struct relay_counters {
	atomic_uint_fast64_t bytes_in;	/* towards the client */
	atomic_uint_fast64_t bytes_out; /* from the client */
	atomic_uint_fast64_t streams;	/* currently open */
};

/* What a stream carries (0 is no kind, so a zeroed record is never a stream). */
enum relay_kind {
	/* a pair of connected stream sockets. EOF from one side becomes shutdown(SHUT_WR)
	 * on the other once the bytes before it are delivered; the pair is closed when both
	 * directions saw EOF. A reset or error on one side resets the other (close with
	 * SO_LINGER 0), so the app sees ECONNRESET where the pod would have. */
	RELAY_TCP = 1,
	/* client_fd carries UDP_DATAGRAM frames (id 0) both ways (proto/proto.h); fd is the
	 * remote-side UDP socket. Each frame from the client is one sendto() to its peer (a
	 * v4 peer on a v6 socket goes out v4-mapped; an unsendable datagram is dropped, as
	 * UDP may); each datagram received is one frame with its real source. Any other
	 * frame, a malformed one or the client's EOF closes the stream. */
	RELAY_UDP,
	/* exactly size bytes of the file fd from offset 0 to client_fd (sendfile), then both
	 * are closed. A file shorter than size resets client_fd, so a short stream never
	 * looks complete. */
	RELAY_FILE,
};

/* "tcp", "udp", "file"; "?" for anything else */
const char *relay_kind_name(enum relay_kind kind);

/* Called (from the relay's thread, or the adding thread on failure) once a stream's
 * fds are closed, exactly once per add. */
struct relay_release {
	void (*fn)(void *arg);
	void *arg;
};

struct relay;
/* counters must outlive the relay. */
int relay_create(struct relay_counters *counters, struct relay **out, struct hm_err *err);
/* Stops the thread and closes (with a reset) everything still relayed or queued. No add
 * may run concurrently with or after it. */
void relay_destroy(struct relay *r);

/* Relay one stream of kind (size: RELAY_FILE only) until it is done; rel may be NULL.
 * May be called from any thread. Takes ownership of both fds in every case: on success
 * the relay closes them when the stream is done, on failure (ENOMEM, or ESHUTDOWN once
 * destroy began) they are closed before returning. The fds are switched to
 * O_NONBLOCK. */
int relay_add(struct relay *r, enum relay_kind kind, int client_fd, int fd, uint64_t size,
	      const struct relay_release *rel, struct hm_err *err);
/* relay_add of a RELAY_TCP pair without a release hook */
int relay_add_tcp(struct relay *r, int client_fd, int remote_fd, struct hm_err *err);

#endif

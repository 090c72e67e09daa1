/* The relay (relay/relay.h): one thread and one epoll set move the bytes of every stream
 * it serves, so an open connection costs a few hundred bytes of state and two fds, never
 * a thread.
 *
 * TCP pairs: a direction that moves small messages (requests, responses) copies them:
 * one recv() into the thread's buffer and one send() cost less than two splices and a
 * pipe's page references. Once a read fills that buffer the direction carries a bulk
 * transfer and splices source socket -> pipe -> destination socket, so payload never
 * enters user space, until a read comes back small again. Bytes a send() did not take
 * go into the direction's pipe, and while the pipe holds bytes every byte goes through
 * it, so order is kept across the two paths. Pipes are taken from a small pool only
 * while a direction has bytes in flight and returned once it is drained: idle
 * connections hold no pipe fds. All fds are registered edge-triggered for in and out
 * once; a direction runs until its source or its destination would block (then an
 * edge for that fd is guaranteed to come) or its budget is spent (then the connection
 * goes on a ready list and runs again after the next epoll_wait), so one busy stream
 * cannot starve others.
 * EOF on one side becomes shutdown(SHUT_WR) on the other once the bytes before it are
 * delivered; an error or reset on one side resets the other (SO_LINGER 0), so the app
 * sees what the pod would have seen.
 *
 * UDP: the client side carries UDP_DATAGRAM frames; each becomes one sendto() on the
 * pod-side socket, each datagram received there becomes one frame with its real source.
 * File: sendfile() of exactly `size` bytes to the client, then close.
 *
 * Work is handed over from other threads through a locked queue and an eventfd; only the
 * relay thread touches a connection once it is queued. */
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>

#include "proto/proto.h"
#include "relay/relay.h"

#define RELAY_PIPE_SIZE (256u << 10)
/* a read that fills the copy buffer switches its direction to splicing; it must fit
 * in an empty pipe (64 KiB at least) since what a send() leaves goes there */
#define RELAY_COPY_MAX (16u << 10)
_Static_assert(RELAY_COPY_MAX <= PROTO_DATAGRAM_MAX, "the copy path shares the datagram buffer");
#define RELAY_PIPE_POOL_MAX 32	       /* idle pipes kept for reuse; the rest are closed */
#define RELAY_BUDGET (1u << 20)	       /* bytes one direction moves before others get a turn */
#define RELAY_DGRAM_BUDGET 64	       /* datagrams per turn */
#define RELAY_UDP_OUT_MAX (256u << 10) /* frames queued for a slow client before pausing */
#define RELAY_EVENTS 128

enum { SIDE_CLIENT = 0, SIDE_REMOTE = 1 };

struct relay_conn;

/* One registered fd; epoll_data points here. */
struct relay_end {
	struct relay_conn *conn;
	int fd;
	uint8_t side;
};

struct relay_pipe {
	int rd, wr;
	uint32_t cap;
};

/* Bytes from end[from] to end[!from]. */
struct relay_dir {
	struct relay_pipe pipe; /* rd < 0: none held */
	uint32_t pending;	/* bytes in the pipe */
	bool eof;		/* the source said EOF */
	bool done;		/* EOF delivered (or the destination stopped reading) */
	bool bulk;		/* splice, not copy: the last read was big */
	/* a short read proves the source's queue empty, so the next bytes bring a new
	 * edge and no EAGAIN probe is needed: true of a TCP source (tcp_recvmsg stops
	 * early only with its queue empty or an urgent mark, and a backlog it leaves
	 * raises an edge when processed) until epoll reports its end (an EOF already
	 * queued behind the bytes raises no new edge). Not of a unix socket, whose reads
	 * stop between two writers' bytes. */
	bool short_read_drains;
};

struct relay_conn {
	struct relay_conn *prev, *next; /* all connections of the relay thread */
	struct relay_conn *ready_next;	/* budget spent: run again without waiting */
	enum relay_kind kind;
	bool on_ready;
	bool closed;		      /* later events of the same epoll batch must skip it */
	struct relay_release release; /* called once its fds are closed */
	struct relay_end end[2];
	union {
		struct {
			struct relay_dir dir[2]; /* dir[SIDE_CLIENT]: client -> remote */
		} tcp;
		struct {
			struct proto_frame_reader reader;
			struct proto_buf out; /* frames for the client not yet sent */
			size_t out_off;
			int family;  /* of the pod-side socket */
			bool paused; /* the client is slow: leave datagrams in the kernel */
		} udp;
		struct {
			off_t off;
			uint64_t size;
		} file;
	};
};

struct relay {
	struct relay_counters *counters;
	pthread_t thread;
	bool thread_started;
	int epfd;
	int wake_fd; /* eventfd: new work queued or stop requested */

	pthread_mutex_t lock; /* guards incoming and stopping */
	struct relay_conn *incoming;
	bool stopping;

	/* relay thread only */
	struct relay_conn *conns;
	struct relay_conn *ready;
	struct relay_conn *graveyard;
	struct relay_pipe pool[RELAY_PIPE_POOL_MAX];
	unsigned pool_len;
	/* one datagram being framed, or a small TCP message on its way */
	uint8_t *io_buf;
};

/* ---- pipes ---- */

static int pipe_get(struct relay *r, struct relay_pipe *p, struct hm_err *err)
{
	if (r->pool_len) {
		*p = r->pool[--r->pool_len];
		return 0;
	}
	int fds[2];
	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0)
		return hm_err_errno(err, "pipe");
	/* a bigger pipe means fewer splice round trips per MiB; without privilege the
	 * kernel may refuse (pipe-user-pages-soft), then the default 64 KiB still works */
	int cap = fcntl(fds[1], F_SETPIPE_SZ, RELAY_PIPE_SIZE);
	if (cap < 0)
		cap = fcntl(fds[1], F_GETPIPE_SZ);
	if (cap <= 0)
		cap = 65536;
	*p = (struct relay_pipe){fds[0], fds[1], (uint32_t)cap};
	return 0;
}

/* Give back a pipe; only an empty pipe can be reused. */
static void pipe_put(struct relay *r, struct relay_pipe *p, bool empty)
{
	if (p->rd < 0)
		return;
	if (empty && r->pool_len < RELAY_PIPE_POOL_MAX) {
		r->pool[r->pool_len++] = *p;
	} else {
		close(p->rd);
		close(p->wr);
	}
	p->rd = p->wr = -1;
}

/* ---- connection lifecycle ---- */

static void release_call(const struct relay_release *rel)
{
	if (rel && rel->fn)
		rel->fn(rel->arg);
}

static struct relay_conn *conn_new(enum relay_kind kind, int client_fd, int remote_fd,
				   const struct relay_release *rel)
{
	struct relay_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->kind = kind;
	if (rel)
		c->release = *rel;
	for (int s = 0; s < 2; s++) {
		c->end[s].conn = c;
		c->end[s].side = (uint8_t)s;
	}
	c->end[SIDE_CLIENT].fd = client_fd;
	c->end[SIDE_REMOTE].fd = remote_fd;
	if (kind == RELAY_TCP)
		for (int d = 0; d < 2; d++)
			c->tcp.dir[d].pipe = (struct relay_pipe){-1, -1, 0};
	if (kind == RELAY_UDP)
		proto_frame_reader_init(&c->udp.reader, PROTO_DATAGRAM_MAX + 64);
	return c;
}

/* Release what a connection holds; the struct itself is freed by the caller. */
static void conn_release(struct relay *r, struct relay_conn *c, bool reset)
{
	for (int s = 0; s < 2; s++) {
		int fd = c->end[s].fd;
		if (fd < 0)
			continue;
		if (reset) {
			/* close() with linger 0 sends RST: the peer learns the stream broke
			 * instead of taking a truncated stream for a complete one */
			struct linger lg = {.l_onoff = 1, .l_linger = 0};
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		}
		close(fd);
		c->end[s].fd = -1;
	}
	if (c->kind == RELAY_TCP) {
		for (int d = 0; d < 2; d++)
			pipe_put(r, &c->tcp.dir[d].pipe, c->tcp.dir[d].pending == 0);
	} else if (c->kind == RELAY_UDP) {
		proto_frame_reader_release(&c->udp.reader);
		proto_buf_release(&c->udp.out);
	}
	release_call(&c->release);
	c->release.fn = NULL;
}

/* Close a connection from the relay thread. Events of the current batch may still
 * point at it, so it is freed only after the batch. */
static void conn_close(struct relay *r, struct relay_conn *c, bool reset, const char *why)
{
	if (c->closed)
		return;
	hm_debug("relay: %s stream closed%s%s", relay_kind_name(c->kind), why ? ": " : "",
		 why ? why : "");
	c->closed = true;
	conn_release(r, c, reset);
	if (c->prev)
		c->prev->next = c->next;
	else
		r->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = r->graveyard;
	r->graveyard = c;
	atomic_fetch_sub(&r->counters->streams, 1);
}

static void mark_ready(struct relay *r, struct relay_conn *c)
{
	if (c->on_ready)
		return;
	c->on_ready = true;
	c->ready_next = r->ready;
	r->ready = c;
}

static bool would_block(int e)
{
	return e == EAGAIN || e == EWOULDBLOCK;
}

/* Send buf[*off..len) without blocking, advancing *off, until done or the socket is
 * full; < 0 (why set) on an error of the socket. */
static int send_until_full(int fd, const uint8_t *buf, size_t len, size_t *off, const char **why)
{
	while (*off < len) {
		ssize_t n = send(fd, buf + *off, len - *off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (would_block(errno))
				break;
			*why = strerror(errno);
			return -1;
		}
		*off += (size_t)n;
	}
	return 0;
}

/* ---- TCP ---- */

enum step { STEP_WAIT, STEP_AGAIN, STEP_FAILED };

static int dir_pipe(struct relay *r, struct relay_dir *d, const char **why)
{
	struct hm_err err;
	if (d->pipe.rd >= 0)
		return 0;
	if (pipe_get(r, &d->pipe, &err) < 0) {
		*why = "no pipe";
		hm_warn("relay: %s", err.msg);
		return -1;
	}
	return 0;
}

enum copy_result { COPY_SPLICE, COPY_DRAINED, COPY_MORE, COPY_FAILED };

/* The small-message path of a direction with an empty pipe: one recv(), one send() of
 * what came, the rest (if the destination is full) into the pipe. COPY_DRAINED: the
 * read was short, so the source's queue was empty and new bytes bring a new edge;
 * COPY_MORE: go on reading (EOF seen, or a full buffer: from now on the direction
 * splices); COPY_SPLICE: nothing read, the caller's loop decides. */
static enum copy_result tcp_copy(struct relay *r, struct relay_conn *c, int from, size_t *moved,
				 const char **why)
{
	struct relay_dir *d = &c->tcp.dir[from];
	int src = c->end[from].fd, dst = c->end[!from].fd;
	ssize_t n = recv(src, r->io_buf, RELAY_COPY_MAX, MSG_DONTWAIT);
	if (n < 0) {
		if (errno == EINTR || would_block(errno))
			return COPY_SPLICE;
		*why = strerror(errno); /* the source's reset */
		return COPY_FAILED;
	}
	if (n == 0) {
		d->eof = true;
		return COPY_MORE;
	}
	size_t sent = 0;
	if (send_until_full(dst, r->io_buf, (size_t)n, &sent, why) < 0)
		return COPY_FAILED;
	*moved += sent;
	atomic_fetch_add(from == SIDE_CLIENT ? &r->counters->bytes_out : &r->counters->bytes_in,
			 (uint64_t)sent);
	if (sent < (size_t)n) {
		/* the destination is full: the rest waits in the pipe, ahead of anything
		 * read later, and leaves with the destination's EPOLLOUT */
		if (dir_pipe(r, d, why) < 0)
			return COPY_FAILED;
		ssize_t w = write(d->pipe.wr, r->io_buf + sent, (size_t)n - sent);
		if (w != (ssize_t)n - (ssize_t)sent) {
			*why = w < 0 ? strerror(errno) : "pipe too small";
			return COPY_FAILED;
		}
		d->pending = (uint32_t)w;
	}
	if ((size_t)n == RELAY_COPY_MAX) {
		d->bulk = true;
		return COPY_MORE;
	}
	return d->short_read_drains && !d->pending ? COPY_DRAINED : COPY_MORE;
}

/* Move bytes of one direction until it would block or its budget is spent. */
static enum step tcp_run_dir(struct relay *r, struct relay_conn *c, int from, const char **why)
{
	struct relay_dir *d = &c->tcp.dir[from];
	int src = c->end[from].fd, dst = c->end[!from].fd;
	atomic_uint_fast64_t *counter =
	    from == SIDE_CLIENT ? &r->counters->bytes_out : &r->counters->bytes_in;
	size_t moved = 0;

	while (!d->done) {
		bool progress = false;
		if (!d->eof && !d->bulk && !d->pending) {
			switch (tcp_copy(r, c, from, &moved, why)) {
			case COPY_FAILED:
				return STEP_FAILED;
			case COPY_DRAINED:
				return STEP_WAIT;
			case COPY_MORE:
				progress = true;
				break;
			case COPY_SPLICE:
				break;
			}
		}
		if (!d->eof && (d->bulk || d->pending) && dir_pipe(r, d, why) < 0)
			return STEP_FAILED;
		if (!d->eof && d->pipe.rd >= 0 && d->pending < d->pipe.cap) {
			ssize_t n = splice(src, NULL, d->pipe.wr, NULL, d->pipe.cap - d->pending,
					   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				d->pending += (uint32_t)n;
				progress = true;
				/* a small read: the transfer is over, small messages again */
				if ((size_t)n < RELAY_COPY_MAX)
					d->bulk = false;
			} else if (n == 0) {
				d->eof = true;
				progress = true;
			} else if (errno != EINTR && !would_block(errno)) {
				/* a read error is the source's reset: pass it on */
				*why = strerror(errno);
				return STEP_FAILED;
			}
		}
		if (d->pending) {
			ssize_t n = splice(d->pipe.rd, NULL, dst, NULL, d->pending,
					   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				d->pending -= (uint32_t)n;
				moved += (size_t)n;
				atomic_fetch_add(counter, (uint64_t)n);
				progress = true;
			} else if (n < 0 && errno != EINTR && !would_block(errno)) {
				*why = strerror(errno);
				return STEP_FAILED;
			}
		}
		if (d->eof && !d->pending) {
			/* everything before the EOF is delivered: pass the half-close on */
			if (shutdown(dst, SHUT_WR) < 0 && errno != ENOTCONN) {
				*why = strerror(errno);
				return STEP_FAILED;
			}
			d->done = true;
		}
		if (!d->pending)
			pipe_put(r, &d->pipe, true);
		if (!progress)
			return STEP_WAIT;
		if (moved >= RELAY_BUDGET)
			return STEP_AGAIN;
	}
	return STEP_WAIT;
}

static void tcp_event(struct relay *r, struct relay_conn *c, int side, uint32_t ev)
{
	const char *why = NULL;
	bool again = false;
	if (ev & EPOLLERR) {
		int soerr = 0;
		socklen_t len = sizeof(soerr);
		getsockopt(c->end[side].fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
		if (soerr) {
			conn_close(r, c, true, strerror(soerr));
			return;
		}
	}
	if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		c->tcp.dir[side].short_read_drains = false;
	/* the direction out of this fd on input, the one into it when it drained */
	if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		enum step s = tcp_run_dir(r, c, side, &why);
		if (s == STEP_FAILED)
			goto fail;
		again |= s == STEP_AGAIN;
	}
	if ((ev & EPOLLOUT) && c->tcp.dir[!side].pending) {
		enum step s = tcp_run_dir(r, c, !side, &why);
		if (s == STEP_FAILED)
			goto fail;
		again |= s == STEP_AGAIN;
	}
	if ((ev & EPOLLHUP) && !c->tcp.dir[!side].done) {
		/* this end will read nothing more (a unix peer that closed, a reset): what
		 * is still headed its way can never arrive */
		struct relay_dir *d = &c->tcp.dir[!side];
		pipe_put(r, &d->pipe, false);
		d->pending = 0;
		d->done = true;
	}
	if (c->tcp.dir[0].done && c->tcp.dir[1].done) {
		conn_close(r, c, false, NULL);
		return;
	}
	if (again)
		mark_ready(r, c);
	return;
fail:
	conn_close(r, c, true, why);
}

/* A connection whose budget ran out: both directions get another turn. */
static void tcp_rerun(struct relay *r, struct relay_conn *c)
{
	tcp_event(r, c, SIDE_CLIENT, EPOLLIN | EPOLLOUT);
	if (!c->closed)
		tcp_event(r, c, SIDE_REMOTE, EPOLLIN | EPOLLOUT);
}

/* ---- UDP ---- */

/* Translate a peer to the socket's family: a v4 peer on a v6 socket becomes
 * ::ffff:a.b.c.d, a v4-mapped peer on a v4 socket its v4 address. */
static socklen_t udp_peer_sockaddr(const struct proto_addr *peer, int family,
				   struct sockaddr_storage *ss)
{
	struct proto_addr a = *peer;
	static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	if (family == AF_INET6 && a.family == PROTO_AF_INET) {
		memmove(a.addr + 12, a.addr, 4);
		memcpy(a.addr, mapped_prefix, 12);
		a.family = PROTO_AF_INET6;
		a.scope_id = 0;
	} else if (family == AF_INET && a.family == PROTO_AF_INET6 &&
		   memcmp(a.addr, mapped_prefix, 12) == 0) {
		memmove(a.addr, a.addr + 12, 4);
		a.family = PROTO_AF_INET;
	}
	return proto_addr_to_sockaddr(&a, ss);
}

/* Send queued frames to the client; false on a fatal error. */
static bool udp_flush(struct relay_conn *c, const char **why)
{
	struct proto_buf *b = &c->udp.out;
	if (send_until_full(c->end[SIDE_CLIENT].fd, b->data, b->len, &c->udp.out_off, why) < 0)
		return false;
	if (c->udp.out_off == b->len) {
		c->udp.out_off = 0;
		/* a burst may have grown the buffer: do not keep it for an idle stream */
		if (b->cap > 65536)
			proto_buf_release(b);
		else
			proto_buf_reset(b);
	} else if (c->udp.out_off > b->len / 2) {
		memmove(b->data, b->data + c->udp.out_off, b->len - c->udp.out_off);
		b->len -= c->udp.out_off;
		c->udp.out_off = 0;
	}
	return true;
}

/* Client -> pod: one sendto() per frame. */
static enum step udp_from_client(struct relay *r, struct relay_conn *c, const char **why, bool *eof)
{
	static __thread char msgbuf[HM_ERR_MSG_MAX];
	for (unsigned i = 0; i < RELAY_DGRAM_BUDGET; i++) {
		struct hm_err err;
		struct proto_frame f = {0};
		int rc = proto_frame_reader_read(&c->udp.reader, c->end[SIDE_CLIENT].fd, &f, &err);
		if (rc == 0)
			return STEP_WAIT;
		if (rc < 0) {
			if (err.code == 0) { /* the client closed between frames */
				*eof = true;
				return STEP_WAIT;
			}
			snprintf(msgbuf, sizeof(msgbuf), "%s", err.msg);
			*why = msgbuf;
			return STEP_FAILED;
		}
		struct proto_msg m = {0};
		if (f.hdr.type != PROTO_UDP_DATAGRAM) {
			proto_frame_release(&f);
			snprintf(msgbuf, sizeof(msgbuf), "unexpected %s frame on a UDP stream",
				 proto_type_name(f.hdr.type));
			*why = msgbuf;
			return STEP_FAILED;
		}
		if (proto_decode_frame(&f, &m, &err) < 0) {
			proto_msg_free(&m);
			snprintf(msgbuf, sizeof(msgbuf), "%s", err.msg);
			*why = msgbuf;
			return STEP_FAILED;
		}
		struct sockaddr_storage ss;
		socklen_t sl = udp_peer_sockaddr(&m.udp_datagram.peer, c->udp.family, &ss);
		ssize_t n =
		    sl ? sendto(c->end[SIDE_REMOTE].fd, m.udp_datagram.data, m.udp_datagram.len,
				MSG_NOSIGNAL, (struct sockaddr *)&ss, sl)
		       : -1;
		if (n < 0) {
			/* UDP promises nothing: an unreachable peer or a full socket buffer
			 * loses this datagram, the stream lives on */
			char a[80];
			hm_debug("relay: udp datagram to %s dropped: %s",
				 proto_addr_str(&m.udp_datagram.peer, a, sizeof(a)),
				 sl ? strerror(errno) : "bad address family");
		} else {
			atomic_fetch_add(&r->counters->bytes_out, (uint64_t)n);
		}
		proto_msg_free(&m);
	}
	return STEP_AGAIN;
}

/* Pod -> client: one frame per datagram, with its real source address. */
static enum step udp_to_client(struct relay *r, struct relay_conn *c, const char **why)
{
	if (c->udp.paused)
		return STEP_WAIT;
	for (unsigned i = 0; i < RELAY_DGRAM_BUDGET; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		ssize_t n = recvfrom(c->end[SIDE_REMOTE].fd, r->io_buf, PROTO_DATAGRAM_MAX,
				     MSG_DONTWAIT, (struct sockaddr *)&ss, &sl);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (would_block(errno))
				return udp_flush(c, why) ? STEP_WAIT : STEP_FAILED;
			/* ICMP errors reported on the socket are per datagram, not fatal */
			hm_debug("relay: udp receive: %s", strerror(errno));
			continue;
		}
		struct proto_msg m = {.type = PROTO_UDP_DATAGRAM};
		struct hm_err err;
		if (proto_addr_from_sockaddr((struct sockaddr *)&ss, sl, &m.udp_datagram.peer,
					     &err) < 0)
			continue;
		m.udp_datagram.data = r->io_buf;
		m.udp_datagram.len = (uint32_t)n;
		if (proto_encode(&c->udp.out, 0, &m, &err) < 0) {
			*why = "cannot frame a datagram";
			return STEP_FAILED;
		}
		atomic_fetch_add(&r->counters->bytes_in, (uint64_t)n);
		if (c->udp.out.len - c->udp.out_off >= RELAY_UDP_OUT_MAX) {
			if (!udp_flush(c, why))
				return STEP_FAILED;
			if (c->udp.out.len - c->udp.out_off >= RELAY_UDP_OUT_MAX) {
				/* resumed by the client's next EPOLLOUT */
				c->udp.paused = true;
				return STEP_WAIT;
			}
		}
	}
	return udp_flush(c, why) ? STEP_AGAIN : STEP_FAILED;
}

static void udp_event(struct relay *r, struct relay_conn *c, int side, uint32_t ev)
{
	const char *why = NULL;
	bool again = false, drain_pod = side == SIDE_REMOTE;
	enum step s;
	if (side == SIDE_CLIENT && (ev & EPOLLOUT)) {
		if (!udp_flush(c, &why))
			goto fail;
		if (c->udp.paused && c->udp.out.len - c->udp.out_off < RELAY_UDP_OUT_MAX) {
			/* datagrams waited in the kernel while the client was slow */
			c->udp.paused = false;
			drain_pod = true;
		}
	}
	if (side == SIDE_CLIENT && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
		bool eof = false;
		s = udp_from_client(r, c, &why, &eof);
		if (s == STEP_FAILED)
			goto fail;
		if (eof) {
			conn_close(r, c, false, NULL);
			return;
		}
		again |= s == STEP_AGAIN;
	}
	if (drain_pod) {
		s = udp_to_client(r, c, &why);
		if (s == STEP_FAILED)
			goto fail;
		again |= s == STEP_AGAIN;
	}
	if (again)
		mark_ready(r, c);
	return;
fail:
	conn_close(r, c, true, why);
}

static void udp_rerun(struct relay *r, struct relay_conn *c)
{
	udp_event(r, c, SIDE_CLIENT, EPOLLIN | EPOLLOUT);
	if (!c->closed)
		udp_event(r, c, SIDE_REMOTE, EPOLLIN);
}

/* ---- file ---- */

static void file_event(struct relay *r, struct relay_conn *c, uint32_t ev)
{
	if (ev & (EPOLLERR | EPOLLHUP)) {
		conn_close(r, c, true, "client went away");
		return;
	}
	size_t moved = 0;
	while ((uint64_t)c->file.off < c->file.size) {
		uint64_t left = c->file.size - (uint64_t)c->file.off;
		size_t chunk = left < RELAY_BUDGET ? (size_t)left : RELAY_BUDGET;
		ssize_t n =
		    sendfile(c->end[SIDE_CLIENT].fd, c->end[SIDE_REMOTE].fd, &c->file.off, chunk);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (would_block(errno))
				return;
			conn_close(r, c, true, strerror(errno));
			return;
		}
		if (n == 0) {
			/* the file shrank under us: a short stream must not look complete */
			conn_close(r, c, true, "file shorter than announced");
			return;
		}
		atomic_fetch_add(&r->counters->bytes_in, (uint64_t)n);
		moved += (size_t)n;
		if (moved >= RELAY_BUDGET && (uint64_t)c->file.off < c->file.size) {
			mark_ready(r, c);
			return;
		}
	}
	conn_close(r, c, false, NULL);
}

/* ---- the thread ---- */

static void conn_dispatch(struct relay *r, struct relay_conn *c, int side, uint32_t ev)
{
	switch (c->kind) {
	case RELAY_TCP:
		tcp_event(r, c, side, ev);
		break;
	case RELAY_UDP:
		udp_event(r, c, side, ev);
		break;
	case RELAY_FILE:
		file_event(r, c, ev);
		break;
	}
}

static void conn_rerun(struct relay *r, struct relay_conn *c)
{
	switch (c->kind) {
	case RELAY_TCP:
		tcp_rerun(r, c);
		break;
	case RELAY_UDP:
		udp_rerun(r, c);
		break;
	case RELAY_FILE:
		file_event(r, c, EPOLLOUT);
		break;
	}
}

/* Register a queued connection (closed if it cannot be). */
static void conn_start(struct relay *r, struct relay_conn *c)
{
	c->next = r->conns;
	if (r->conns)
		r->conns->prev = c;
	r->conns = c;
	/* a regular file cannot be polled: only the client side of a file stream is */
	int nends = c->kind == RELAY_FILE ? 1 : 2;
	for (int s = 0; s < nends; s++) {
		struct epoll_event ev = {
		    .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
		    .data.ptr = &c->end[s],
		};
		if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, c->end[s].fd, &ev) < 0) {
			hm_warn("relay: epoll_ctl: %s", strerror(errno));
			conn_close(r, c, true, "cannot register");
			return;
		}
	}
	/* edge-triggered registration reports what is already pending, nothing to do */
}

static void take_incoming(struct relay *r, bool *stop)
{
	uint64_t v;
	while (read(r->wake_fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
	pthread_mutex_lock(&r->lock);
	struct relay_conn *list = r->incoming;
	r->incoming = NULL;
	*stop = r->stopping;
	pthread_mutex_unlock(&r->lock);
	while (list) {
		struct relay_conn *c = list;
		list = c->next;
		c->next = c->prev = NULL;
		conn_start(r, c);
	}
}

/* Free closed connections, except those still linked in a ready list: they are
 * skipped there and freed after the next round. */
static void bury(struct relay *r)
{
	struct relay_conn **pp = &r->graveyard;
	while (*pp) {
		struct relay_conn *c = *pp;
		if (c->on_ready) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		free(c);
	}
}

static void *relay_main(void *arg)
{
	struct relay *r = arg;
	struct epoll_event events[RELAY_EVENTS];
	bool stop = false;
	while (!stop) {
		int n = epoll_wait(r->epfd, events, RELAY_EVENTS, r->ready ? 0 : -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			hm_error("relay: epoll_wait: %s", strerror(errno));
			break;
		}
		/* connections whose budget ran out go after the fresh events */
		struct relay_conn *ready = r->ready;
		r->ready = NULL;
		for (int i = 0; i < n; i++) {
			if (!events[i].data.ptr) {
				take_incoming(r, &stop);
				continue;
			}
			struct relay_end *e = events[i].data.ptr;
			if (!e->conn->closed)
				conn_dispatch(r, e->conn, e->side, events[i].events);
		}
		while (ready) {
			struct relay_conn *c = ready;
			ready = c->ready_next;
			c->on_ready = false;
			if (!c->closed)
				conn_rerun(r, c);
		}
		bury(r);
	}
	return NULL;
}

/* ---- API ---- */

const char *relay_kind_name(enum relay_kind kind)
{
	switch (kind) {
	case RELAY_TCP:
		return "tcp";
	case RELAY_UDP:
		return "udp";
	case RELAY_FILE:
		return "file";
	}
	return "?";
}

static void stop_thread(struct relay *r);

int relay_create(struct relay_counters *counters, struct relay **out, struct hm_err *err)
{
	*out = NULL;
	struct relay *r = calloc(1, sizeof(*r));
	if (!r)
		return hm_err_set(err, ENOMEM, "relay");
	r->counters = counters;
	r->epfd = r->wake_fd = -1;
	pthread_mutex_init(&r->lock, NULL);
	r->io_buf = malloc(PROTO_DATAGRAM_MAX);
	if (!r->io_buf) {
		hm_err_set(err, ENOMEM, "relay buffer");
		goto fail;
	}
	r->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (r->epfd < 0) {
		hm_err_errno(err, "epoll_create1");
		goto fail;
	}
	r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->wake_fd < 0) {
		hm_err_errno(err, "eventfd");
		goto fail;
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->wake_fd, &ev) < 0) {
		hm_err_errno(err, "epoll_ctl");
		goto fail;
	}
	/* the loop needs little stack: keep the thread's footprint small */
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256u << 10);
	int rc = pthread_create(&r->thread, &attr, relay_main, r);
	pthread_attr_destroy(&attr);
	if (rc) {
		hm_err_set(err, rc, "relay thread");
		goto fail;
	}
	r->thread_started = true;
	*out = r;
	return 0;
fail:
	relay_destroy(r);
	return -1;
}

static void wake(struct relay *r)
{
	uint64_t one = 1;
	while (write(r->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

void relay_destroy(struct relay *r)
{
	if (!r)
		return;
	if (r->thread_started)
		stop_thread(r);
	while (r->pool_len) {
		struct relay_pipe *p = &r->pool[--r->pool_len];
		close(p->rd);
		close(p->wr);
	}
	if (r->epfd >= 0)
		close(r->epfd);
	if (r->wake_fd >= 0)
		close(r->wake_fd);
	free(r->io_buf);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

/* Stop the thread, then close what it left: everything below is ours from then on. */
static void stop_thread(struct relay *r)
{
	pthread_mutex_lock(&r->lock);
	r->stopping = true;
	pthread_mutex_unlock(&r->lock);
	wake(r);
	pthread_join(r->thread, NULL);
	/* the thread is gone: everything below is ours */
	struct relay_conn *c = r->incoming;
	while (c) {
		struct relay_conn *next = c->next;
		conn_release(r, c, true);
		atomic_fetch_sub(&r->counters->streams, 1);
		free(c);
		c = next;
	}
	r->incoming = NULL;
	while (r->conns)
		conn_close(r, r->conns, true, "relay stopped");
	for (c = r->ready; c; c = c->ready_next)
		c->on_ready = false;
	r->ready = NULL;
	bury(r);
}

static int set_nonblock(int fd, struct hm_err *err)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0))
		return hm_err_errno(err, "fcntl O_NONBLOCK");
	return 0;
}

/* A proxy forwards what it gets when it gets it: Nagle on top would add a delay the
 * app did not ask for. Fails harmlessly on unix sockets. */
static void set_nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void close_fd(int fd)
{
	if (fd >= 0)
		close(fd);
}

/* Hand a prepared connection to the relay thread; on failure everything is closed. */
static int enqueue(struct relay *r, struct relay_conn *c, struct hm_err *err)
{
	pthread_mutex_lock(&r->lock);
	if (r->stopping) {
		pthread_mutex_unlock(&r->lock);
		conn_release(r, c, true); /* touches no pipe: a new connection holds none */
		free(c);
		return hm_err_set(err, ESHUTDOWN, "relay stopped");
	}
	c->next = r->incoming;
	r->incoming = c;
	atomic_fetch_add(&r->counters->streams, 1);
	pthread_mutex_unlock(&r->lock);
	wake(r);
	return 0;
}

static int add_pair(enum relay_kind kind, int client_fd, int remote_fd,
		    const struct relay_release *rel, struct relay_conn **out, struct hm_err *err)
{
	*out = NULL;
	if (set_nonblock(client_fd, err) < 0 ||
	    (kind != RELAY_FILE && set_nonblock(remote_fd, err) < 0))
		goto fail;
	*out = conn_new(kind, client_fd, remote_fd, rel);
	if (!*out) {
		hm_err_set(err, ENOMEM, "relay connection");
		goto fail;
	}
	return 0;
fail:
	close_fd(client_fd);
	close_fd(remote_fd);
	release_call(rel);
	return -1;
}

static bool is_tcp(int fd)
{
	int proto = 0;
	socklen_t len = sizeof(proto);
	return getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 && proto == IPPROTO_TCP;
}

static int add_tcp(struct relay *r, int client_fd, int remote_fd, const struct relay_release *rel,
		   struct hm_err *err)
{
	struct relay_conn *c;
	if (add_pair(RELAY_TCP, client_fd, remote_fd, rel, &c, err) < 0)
		return hm_err_prefix(err, "relay tcp");
	for (int s = 0; s < 2; s++) {
		int fd = c->end[s].fd;
		c->tcp.dir[s].short_read_drains = is_tcp(fd);
		set_nodelay(fd);
	}
	return enqueue(r, c, err);
}

static int add_udp(struct relay *r, int client_fd, int udp_fd, const struct relay_release *rel,
		   struct hm_err *err)
{
	int family = 0;
	socklen_t len = sizeof(family);
	if (getsockopt(udp_fd, SOL_SOCKET, SO_DOMAIN, &family, &len) < 0) {
		hm_err_errno(err, "relay udp: SO_DOMAIN");
		close_fd(client_fd);
		close_fd(udp_fd);
		release_call(rel);
		return -1;
	}
	struct relay_conn *c;
	if (add_pair(RELAY_UDP, client_fd, udp_fd, rel, &c, err) < 0)
		return hm_err_prefix(err, "relay udp");
	c->udp.family = family;
	return enqueue(r, c, err);
}

static int add_file(struct relay *r, int client_fd, int file_fd, uint64_t size,
		    const struct relay_release *rel, struct hm_err *err)
{
	struct relay_conn *c;
	if (size > (uint64_t)INT64_MAX) {
		close_fd(client_fd);
		close_fd(file_fd);
		release_call(rel);
		return hm_err_set(err, EFBIG, "relay file: size %llu", (unsigned long long)size);
	}
	if (add_pair(RELAY_FILE, client_fd, file_fd, rel, &c, err) < 0)
		return hm_err_prefix(err, "relay file");
	c->file.size = size;
	return enqueue(r, c, err);
}

int relay_add(struct relay *r, enum relay_kind kind, int client_fd, int fd, uint64_t size,
	      const struct relay_release *rel, struct hm_err *err)
{
	switch (kind) {
	case RELAY_TCP:
		return add_tcp(r, client_fd, fd, rel, err);
	case RELAY_UDP:
		return add_udp(r, client_fd, fd, rel, err);
	case RELAY_FILE:
		return add_file(r, client_fd, fd, size, rel, err);
	}
	close_fd(client_fd);
	close_fd(fd);
	release_call(rel);
	return hm_err_set(err, EINVAL, "unknown stream kind %d", (int)kind);
}

int relay_add_tcp(struct relay *r, int client_fd, int remote_fd, struct hm_err *err)
{
	return add_tcp(r, client_fd, remote_fd, NULL, err);
}

/* stream.c: the socket waits of one job bounded by its deadline (Client Side Operations Timeout).
 * libmongoc 1.23 bounds every socket read and write by the URI's socketTimeoutMS alone. Each
 * libmongoc client the core takes from the pool gets a stream initiator (public API) that wraps
 * libmongoc's own stream: a read or a write of a job under a deadline waits until that deadline
 * (a thread-local set by the worker), not longer and not shorter (socketTimeoutMS is ignored under
 * timeoutMS), so a server that does not answer fails the command as a socket timeout at the
 * deadline, libmongoc closes that connection (as PyMongo closes one that timed out), and the
 * worker is free; after the deadline no new connection is opened, so libmongoc's own retry of a
 * read cannot send the command again. Jobs without a deadline wait as before. Pure C, no GIL:
 * called by libmongoc on the thread running the job. */
#include "asyncmongo.h"

#include <errno.h>

/* libmongoc's default initiator: exported by libmongoc 1.23 (and later) but declared in a private
 * header only; `user_data` is the client. A custom initiator must make the same stream (buffered
 * TCP, possibly TLS) for the client's TLS options to apply, so it calls this one. */
mongoc_stream_t *mongoc_client_default_stream_initiator(const mongoc_uri_t *uri,
                                                        const mongoc_host_list_t *host,
                                                        void *user_data, bson_error_t *error);

#define AMONGO_STREAM_TYPE 0x616d /* ours: no libmongoc stream type has this value */

static _Thread_local int64_t current_deadline_us;

void
amongo_stream_set_deadline_nogil(int64_t deadline_us)
{
    current_deadline_us = deadline_us;
}

typedef struct {
    mongoc_stream_t vtable; /* first: libmongoc calls through it */
    mongoc_stream_t *base;  /* libmongoc's own stream, owned */
} TimedStream;

static mongoc_stream_t *
base_of(mongoc_stream_t *stream)
{
    return ((TimedStream *)stream)->base;
}

/* Under a deadline the wait is the time the current job has left, whatever libmongoc asked for
 * (its socketTimeoutMS: the specification ignores the deprecated option under timeoutMS); rounded
 * up, so that a wait cut short ends at or after the deadline (never a little before it, which would
 * leave a retry a millisecond to open a connection in); at least 1 ms: a wait of 0 means "do not
 * wait" to libmongoc's sockets, and is left as it is. */
static int32_t
clamp_timeout_nogil(int32_t timeout_msec)
{
    int64_t deadline = current_deadline_us;
    if (!deadline || timeout_msec == 0)
        return timeout_msec;
    int64_t left_ms = (deadline - bson_get_monotonic_time() + 999) / 1000;
    if (left_ms < 1)
        left_ms = 1;
    if (left_ms > INT32_MAX)
        left_ms = INT32_MAX;
    return (int32_t)left_ms;
}

static void
timed_destroy_nogil(mongoc_stream_t *stream)
{
    mongoc_stream_destroy(base_of(stream));
    free(stream);
}

static void
timed_failed_nogil(mongoc_stream_t *stream)
{
    mongoc_stream_failed(base_of(stream));
    free(stream);
}

static int
timed_close_nogil(mongoc_stream_t *stream)
{
    return mongoc_stream_close(base_of(stream));
}

static int
timed_flush_nogil(mongoc_stream_t *stream)
{
    return mongoc_stream_flush(base_of(stream));
}

static ssize_t
timed_writev_nogil(mongoc_stream_t *stream, mongoc_iovec_t *iov, size_t iovcnt,
                   int32_t timeout_msec)
{
    return mongoc_stream_writev(base_of(stream), iov, iovcnt, clamp_timeout_nogil(timeout_msec));
}

static ssize_t
timed_readv_nogil(mongoc_stream_t *stream, mongoc_iovec_t *iov, size_t iovcnt, size_t min_bytes,
                  int32_t timeout_msec)
{
    return mongoc_stream_readv(base_of(stream), iov, iovcnt, min_bytes,
                               clamp_timeout_nogil(timeout_msec));
}

static int
timed_setsockopt_nogil(mongoc_stream_t *stream, int level, int optname, void *optval,
                       mongoc_socklen_t optlen)
{
    return mongoc_stream_setsockopt(base_of(stream), level, optname, optval, optlen);
}

static mongoc_stream_t *
timed_get_base_nogil(mongoc_stream_t *stream)
{
    return base_of(stream);
}

static bool
timed_check_closed_nogil(mongoc_stream_t *stream)
{
    return mongoc_stream_check_closed(base_of(stream));
}

static bool
timed_timed_out_nogil(mongoc_stream_t *stream)
{
    return mongoc_stream_timed_out(base_of(stream));
}

static bool
timed_should_retry_nogil(mongoc_stream_t *stream)
{
    return mongoc_stream_should_retry(base_of(stream));
}

/* Poll the base streams in place of ours (libmongoc polls an array of one kind of stream). */
static ssize_t
timed_poll_nogil(mongoc_stream_poll_t *streams, size_t nstreams, int32_t timeout)
{
    mongoc_stream_poll_t local[8];
    mongoc_stream_poll_t *bases = nstreams <= 8 ? local : calloc(nstreams, sizeof *bases);
    if (!bases) {
        errno = ENOMEM;
        return -1;
    }
    for (size_t i = 0; i < nstreams; i++) {
        bases[i] = streams[i];
        bases[i].stream = base_of(streams[i].stream);
    }
    ssize_t n = mongoc_stream_poll(bases, nstreams, clamp_timeout_nogil(timeout));
    for (size_t i = 0; i < nstreams; i++)
        streams[i].revents = bases[i].revents;
    if (bases != local)
        free(bases);
    return n;
}

/* The initiator: libmongoc's stream, wrapped; none once the current job's deadline has passed. */
static mongoc_stream_t *
timed_initiator_nogil(const mongoc_uri_t *uri, const mongoc_host_list_t *host, void *user_data,
                      bson_error_t *error)
{
    int64_t deadline = current_deadline_us;
    if (deadline && bson_get_monotonic_time() >= deadline - AMONGO_DEADLINE_SLACK_US) {
        bson_set_error(error, MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_CONNECT,
                       "operation would exceed time limit: no new connection to %s after the "
                       "deadline", host->host_and_port);
        return NULL;
    }
    mongoc_stream_t *base = mongoc_client_default_stream_initiator(uri, host, user_data, error);
    if (!base)
        return NULL;
    TimedStream *s = calloc(1, sizeof *s);
    if (!s) {
        mongoc_stream_destroy(base);
        bson_set_error(error, MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_CONNECT, "out of memory");
        return NULL;
    }
    s->base = base;
    s->vtable.type = AMONGO_STREAM_TYPE;
    s->vtable.destroy = timed_destroy_nogil;
    s->vtable.failed = timed_failed_nogil;
    s->vtable.close = timed_close_nogil;
    s->vtable.flush = timed_flush_nogil;
    s->vtable.writev = timed_writev_nogil;
    s->vtable.readv = timed_readv_nogil;
    s->vtable.setsockopt = timed_setsockopt_nogil;
    s->vtable.get_base_stream = timed_get_base_nogil;
    s->vtable.check_closed = timed_check_closed_nogil;
    s->vtable.timed_out = timed_timed_out_nogil;
    s->vtable.should_retry = timed_should_retry_nogil;
    s->vtable.poll = timed_poll_nogil;
    return &s->vtable;
}

/* On a client just taken from libmongoc's pool, before it is used: in libmongoc 1.23 a pooled
 * client's initiator is a field of that client alone (the pool's monitors keep theirs), used only
 * by the thread holding the client. */
void
amongo_stream_install_nogil(mongoc_client_t *client)
{
    mongoc_client_set_stream_initiator(client, timed_initiator_nogil, client);
}

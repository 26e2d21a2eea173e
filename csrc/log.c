/* log.c: libmongoc's log output, delivered to Python's `logging` (logger "asyncmongo").
 * libmongoc logs from any thread, including its topology monitor and our workers, which must not
 * take the GIL; the handler only parks messages in a bounded buffer, and a loop thread hands them to
 * `logging` at its next drain or submit. Nothing ever goes to stdout. */
#include "asyncmongo.h"

#define LOG_CAPACITY 1024

typedef struct LogEntry {
    struct LogEntry *next;
    int level;
    char *domain;
    char *message;
} LogEntry;

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER; /* protects the list and the counts */
static LogEntry *log_head, *log_tail;
static int log_count;
static long log_dropped;
atomic_int amongo_log_pending;

static void
log_handler_nogil(mongoc_log_level_t level, const char *domain, const char *message, void *data)
{
    (void)data;
    if (level == MONGOC_LOG_LEVEL_TRACE)
        return;
    LogEntry *e = malloc(sizeof *e);
    if (!e)
        return;
    e->next = NULL;
    e->level = (int)level;
    e->domain = strdup(domain ? domain : "");
    e->message = strdup(message ? message : "");
    pthread_mutex_lock(&log_mu);
    if (log_count >= LOG_CAPACITY || !e->domain || !e->message) {
        log_dropped++;
        pthread_mutex_unlock(&log_mu);
        free(e->domain);
        free(e->message);
        free(e);
        return;
    }
    if (log_tail)
        log_tail->next = e;
    else
        log_head = e;
    log_tail = e;
    log_count++;
    atomic_store(&amongo_log_pending, 1);
    pthread_mutex_unlock(&log_mu);
}

void
amongo_log_install(void)
{
    mongoc_log_set_handler(log_handler_nogil, NULL);
    /* libmongoc's tracing is compiled out of release builds; make sure it stays off. */
    mongoc_log_trace_disable();
}

static int
python_level(int level)
{
    switch (level) {
    case MONGOC_LOG_LEVEL_ERROR:
    case MONGOC_LOG_LEVEL_CRITICAL:
        return 40;
    case MONGOC_LOG_LEVEL_WARNING:
        return 30;
    case MONGOC_LOG_LEVEL_MESSAGE:
    case MONGOC_LOG_LEVEL_INFO:
        return 20;
    default:
        return 10;
    }
}

/* Loop thread, GIL held. Errors while logging are reported as unraisable, never propagated. */
void
amongo_log_flush(AmongoState *st)
{
    pthread_mutex_lock(&log_mu);
    LogEntry *e = log_head;
    long dropped = log_dropped;
    log_head = log_tail = NULL;
    log_count = 0;
    log_dropped = 0;
    atomic_store(&amongo_log_pending, 0);
    pthread_mutex_unlock(&log_mu);

    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    while (e) {
        LogEntry *next = e->next;
        PyObject *r = PyObject_CallMethod(st->logger, "log", "isss", python_level(e->level),
                                          "libmongoc %s: %s", e->domain, e->message);
        if (!r)
            PyErr_WriteUnraisable(st->logger);
        Py_XDECREF(r);
        free(e->domain);
        free(e->message);
        free(e);
        e = next;
    }
    if (dropped) {
        PyObject *r = PyObject_CallMethod(st->logger, "log", "isl", 30,
                                          "libmongoc: %d log messages dropped (buffer full)", dropped);
        if (!r)
            PyErr_WriteUnraisable(st->logger);
        Py_XDECREF(r);
    }
    PyErr_Restore(exc_type, exc_value, exc_tb);
}

/* errors.c: (domain, code, reply) -> pymongo.errors exception, in one table.
 * Users catch the classes they catch with PyMongo, built with PyMongo's constructor arguments
 * (message, code, details), so that `details`, `code` and error labels read the same. */
#include "asyncmongo.h"
#include "codec.h"

#include <string.h>

/* The pymongo.errors classes the core raises: every one must exist (a test checks the list). */
static const struct {
    const char *name;
    size_t offset;
} exc_names[] = {
#define EXC(n) {#n, offsetof(AmongoState, exc_##n)}
    EXC(PyMongoError), EXC(ConnectionFailure), EXC(AutoReconnect), EXC(NetworkTimeout),
    EXC(ServerSelectionTimeoutError), EXC(NotPrimaryError), EXC(OperationFailure),
    EXC(ExecutionTimeout), EXC(CursorNotFound), EXC(WriteError), EXC(DuplicateKeyError),
    EXC(WriteConcernError), EXC(WTimeoutError), EXC(BulkWriteError), EXC(InvalidOperation),
    EXC(ConfigurationError), EXC(InvalidURI), EXC(ProtocolError), EXC(DocumentTooLarge),
#undef EXC
};

int
amongo_errors_init(AmongoState *st)
{
    PyObject *mod = PyImport_ImportModule("pymongo.errors");
    if (!mod)
        return -1;
    for (size_t i = 0; i < sizeof exc_names / sizeof exc_names[0]; i++) {
        PyObject *cls = PyObject_GetAttrString(mod, exc_names[i].name);
        if (!cls) {
            Py_DECREF(mod);
            return -1;
        }
        *(PyObject **)((char *)st + exc_names[i].offset) = cls;
    }
    Py_DECREF(mod);
    return 0;
}

/* Server error codes that mean "not primary / node is recovering": PyMongo raises NotPrimaryError
 * (an AutoReconnect) for them, so retry loops written for PyMongo keep working. */
static bool
is_not_primary_code(int64_t code)
{
    static const int codes[] = {10107, 13435, 13436, 11600, 11602, 189, 91, 10058};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (codes[i] == code)
            return true;
    return false;
}

/* The exception class for a server-reported error code. */
static PyObject *
class_for_server_code(AmongoState *st, int64_t code, uint32_t domain)
{
    if (code == 11000 || code == 11001 || code == 12582)
        return st->exc_DuplicateKeyError;
    if (code == 50)
        return st->exc_ExecutionTimeout;
    if (code == 43)
        return st->exc_CursorNotFound;
    if (domain == MONGOC_ERROR_WRITE_CONCERN) /* a writeConcernError, whatever its code (PyMongo) */
        return st->exc_WriteConcernError;
    if (is_not_primary_code(code))
        return st->exc_NotPrimaryError;
    return st->exc_OperationFailure;
}

/* The table: the exception class for (domain, code, message), and whether it takes PyMongo's
 * OperationFailure arguments (message, code, details) rather than a message alone. `timed_out`
 * says the failed attempt waited out socketTimeoutMS: libmongoc 1.23 words a timeout and a reset
 * alike. */
static PyObject *
class_for_error(AmongoState *st, const bson_error_t *e, bool timed_out, bool *server_style)
{
    *server_style = false;
    switch (e->domain) {
    case AMONGO_ERROR_DOMAIN_CLOSED:
        return st->exc_InvalidOperation;
    case AMONGO_ERROR_DOMAIN_TIMEOUT: /* as PyMongo's "operation would exceed time limit" */
        *server_style = true;
        return st->exc_ExecutionTimeout;
    case MONGOC_ERROR_SERVER_SELECTION:
        return st->exc_ServerSelectionTimeoutError;
    case MONGOC_ERROR_STREAM:
        /* libmongoc 1.23 gives a socket timeout and a reset the same domain and code
         * (MONGOC_ERROR_STREAM_SOCKET): only the time waited, or its wording, tells them apart. */
        if ((e->code == MONGOC_ERROR_STREAM_SOCKET || (timed_out && e->code ==
                                                           MONGOC_ERROR_STREAM_CONNECT)) &&
            (timed_out || strstr(e->message, "timed out")))
            return st->exc_NetworkTimeout;
        return st->exc_AutoReconnect;
    case MONGOC_ERROR_PROTOCOL:
        if (e->code == MONGOC_ERROR_PROTOCOL_BAD_WIRE_VERSION)
            return st->exc_ConfigurationError;
        return st->exc_ProtocolError;
    case MONGOC_ERROR_CLIENT:
        switch (e->code) {
        case MONGOC_ERROR_CLIENT_TOO_BIG:
            return st->exc_DocumentTooLarge;
        case MONGOC_ERROR_CLIENT_AUTHENTICATE:
            *server_style = true;
            return st->exc_OperationFailure;
        case MONGOC_ERROR_CLIENT_NOT_READY:
            return st->exc_AutoReconnect;
        default:
            return st->exc_InvalidOperation;
        }
    case MONGOC_ERROR_TRANSACTION:
        return st->exc_InvalidOperation;
    case MONGOC_ERROR_SASL:
    case MONGOC_ERROR_SCRAM:
        *server_style = true;
        return st->exc_OperationFailure;
    case MONGOC_ERROR_BSON:
        /* A document too large for the server and an invalid one share MONGOC_ERROR_BSON_INVALID
         * in libmongoc 1.23's bulk API: only the wording tells them apart. */
        if (strstr(e->message, "too large"))
            return st->exc_DocumentTooLarge;
        return st->exc_InvalidOperation;
    case MONGOC_ERROR_COMMAND:
        if (e->code == MONGOC_ERROR_COMMAND_INVALID_ARG ||
            e->code == MONGOC_ERROR_PROTOCOL_BAD_WIRE_VERSION)
            return st->exc_InvalidOperation;
        *server_style = true;
        return class_for_server_code(st, e->code, e->domain);
    case MONGOC_ERROR_SERVER:
    case MONGOC_ERROR_QUERY:
    case MONGOC_ERROR_WRITE_CONCERN:
    case MONGOC_ERROR_COLLECTION:
    case MONGOC_ERROR_CURSOR:
        *server_style = true;
        return class_for_server_code(st, e->code, e->domain);
    default:
        return st->exc_PyMongoError;
    }
}

/* NEW: `cls(message)`, or `cls(message, code, details)`; NotPrimaryError (an AutoReconnect) takes
 * `(message, details)` and reads its code from them. */
static PyObject *
make_exception(AmongoState *st, PyObject *cls, const char *message, bool server_style, int64_t code,
               PyObject *details)
{
    if (!server_style)
        return PyObject_CallFunction(cls, "s", message);
    if (cls == st->exc_NotPrimaryError)
        return PyObject_CallFunction(cls, "sO", message, details ? details : Py_None);
    return PyObject_CallFunction(cls, "sLO", message, (long long)code, details ? details : Py_None);
}

PyObject *
amongo_error_from_job(AmongoState *st, const AmongoJob *job)
{
    bool server_style;
    /* The failed attempt's own time (a retry may have waited for server selection before it:
     * that is not a socket wait), else the job's. poll() rounds its wait down to whole
     * milliseconds: allow a little under the full timeout. */
    int64_t waited = job->failed_attempt_us >= 0 ? job->failed_attempt_us : job->elapsed_us;
    bool timed_out = job->socket_timeout_ms > 0 && waited >= (int64_t)job->socket_timeout_ms * 900;
    /* Under a deadline the socket waits end at it (stream.c): a socket error once it has passed is
     * that timeout (PyMongo's NetworkTimeout). */
    timed_out = timed_out || (job->deadline_us && bson_get_monotonic_time() >=
                                                      job->deadline_us - AMONGO_DEADLINE_SLACK_US);
    PyObject *cls = class_for_error(st, &job->error, timed_out, &server_style);
    PyObject *details = NULL;
    if (server_style && job->has_reply && !bson_empty(&job->reply)) {
        details = amongo_decode_document(st, bson_get_data(&job->reply), job->reply.len, NULL);
        if (!details)
            return NULL;
    }
    if (server_style && !details) {
        details = Py_BuildValue("{s:s,s:I,s:d}", "errmsg", job->error.message, "code",
                                job->error.code, "ok", 0.0);
        if (!details)
            return NULL;
    } else if (server_style && PyDict_Check(details) && !PyDict_GetItemString(details, "code")) {
        /* libmongoc's bulk API answers a failed command with its own counts, not the server's
         * reply: put the server's code and message back, where PyMongo's details have them. */
        PyObject *code = PyLong_FromUnsignedLong(job->error.code);
        PyObject *msg = PyUnicode_DecodeUTF8(job->error.message, strlen(job->error.message), "replace");
        PyObject *ok = PyFloat_FromDouble(0.0);
        int rc = code && msg && ok && PyDict_SetItemString(details, "ok", ok) == 0 &&
                         PyDict_SetItemString(details, "errmsg", msg) == 0 &&
                         PyDict_SetItemString(details, "code", code) == 0
                     ? 0
                     : -1;
        Py_XDECREF(code);
        Py_XDECREF(msg);
        Py_XDECREF(ok);
        if (rc < 0) {
            Py_DECREF(details);
            return NULL;
        }
    }
    PyObject *exc = make_exception(st, cls, job->error.message, server_style, job->error.code, details);
    Py_XDECREF(details);
    return exc;
}

void
amongo_set_error(AmongoState *st, const bson_error_t *error)
{
    bool server_style;
    PyObject *cls = class_for_error(st, error, false, &server_style);
    PyObject *exc = make_exception(st, cls, error->message, server_style, error->code, NULL);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
}

/* NEW reference to item `key` of dict `d`, NULL without error when absent. */
static PyObject *
dict_get(PyObject *d, const char *key)
{
    PyObject *v = PyDict_GetItemString(d, key);
    Py_XINCREF(v);
    return v;
}

static int64_t
error_code(PyObject *err)
{
    PyObject *code = PyDict_GetItemString(err, "code");
    if (!code || !PyLong_Check(code))
        return 0;
    return PyLong_AsLongLong(code);
}

static PyObject *
error_message(PyObject *err)
{
    PyObject *msg = PyDict_GetItemString(err, "errmsg");
    return msg ? msg : Py_None;
}

/* NEW exception for the write errors in a write command's reply, or NULL (no error set) if it has
 * none. Mirrors PyMongo: the last write error raises WriteError / DuplicateKeyError with the error
 * document as details; a write concern error raises WriteConcernError / WTimeoutError; for a bulk,
 * either raises BulkWriteError with the whole result as details. */
PyObject *
amongo_write_error(AmongoState *st, PyObject *reply, bool bulk)
{
    if (!PyDict_Check(reply))
        return NULL;
    PyObject *write_errors = dict_get(reply, "writeErrors");
    if (write_errors && PyList_Check(write_errors) && PyList_GET_SIZE(write_errors) > 0) {
        PyObject *exc;
        if (bulk) {
            exc = PyObject_CallOneArg(st->exc_BulkWriteError, reply);
        } else {
            PyObject *err = PyList_GET_ITEM(write_errors, PyList_GET_SIZE(write_errors) - 1);
            int64_t code = PyDict_Check(err) ? error_code(err) : 0;
            PyObject *cls = (code == 11000 || code == 11001 || code == 12582)
                                ? st->exc_DuplicateKeyError
                                : st->exc_WriteError;
            exc = PyDict_Check(err) ? PyObject_CallFunction(cls, "OLO", error_message(err),
                                                             (long long)code, err)
                                    : PyObject_CallFunction(cls, "s", "write error");
        }
        Py_DECREF(write_errors);
        return exc;
    }
    Py_XDECREF(write_errors);

    PyObject *wce = dict_get(reply, "writeConcernError");
    if (!wce) {
        PyObject *list = dict_get(reply, "writeConcernErrors");
        if (list && PyList_Check(list) && PyList_GET_SIZE(list) > 0) {
            if (bulk) {
                Py_DECREF(list);
                return PyObject_CallOneArg(st->exc_BulkWriteError, reply);
            }
            wce = Py_NewRef(PyList_GET_ITEM(list, PyList_GET_SIZE(list) - 1));
        }
        Py_XDECREF(list);
    }
    if (!wce)
        return NULL;
    PyObject *exc = NULL;
    if (PyDict_Check(wce)) {
        PyObject *info = PyDict_GetItemString(wce, "errInfo");
        bool wtimeout = info && PyDict_Check(info) && PyDict_GetItemString(info, "wtimeout") &&
                        PyObject_IsTrue(PyDict_GetItemString(info, "wtimeout")) == 1;
        /* PyMongo reads error labels from the details: carry the reply's over. */
        PyObject *labels = PyDict_GetItemString(reply, "errorLabels");
        PyObject *details = wce;
        if (labels && !PyDict_GetItemString(wce, "errorLabels")) {
            details = PyDict_Copy(wce);
            if (!details || PyDict_SetItemString(details, "errorLabels", labels) < 0) {
                Py_XDECREF(details);
                Py_DECREF(wce);
                return NULL;
            }
        } else {
            Py_INCREF(details);
        }
        exc = PyObject_CallFunction(wtimeout ? st->exc_WTimeoutError : st->exc_WriteConcernError,
                                    "OLO", error_message(wce), (long long)error_code(wce), details);
        Py_DECREF(details);
    }
    Py_DECREF(wce);
    return exc;
}

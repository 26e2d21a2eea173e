/* module.c: the asyncmongo._core module: multi-phase init, module state, debug counters.
 * Everything the module holds is listed once (AMONGO_STATE_OBJECTS) and both traverse and clear
 * walk that list. libmongoc is initialised once per process; fork is tracked with pthread_atfork. */
#include "asyncmongo.h"
#include "codec.h"

AmongoCounters amongo_counters;
atomic_long amongo_fork_generation;
atomic_int amongo_finalizing;

static void
on_fork_child(void)
{
    atomic_fetch_add(&amongo_fork_generation, 1);
}

static pthread_once_t process_once = PTHREAD_ONCE_INIT;

static void
process_init(void)
{
    mongoc_init();
    amongo_log_install();
    pthread_atfork(NULL, NULL, on_fork_child);
}

AmongoState *
amongo_state_from_type(PyTypeObject *tp)
{
    return (AmongoState *)PyType_GetModuleState(tp);
}

bool
amongo_exiting(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return atomic_load(&amongo_finalizing) || Py_IsFinalizing();
#else
    return atomic_load(&amongo_finalizing) || _Py_IsFinalizing();
#endif
}

static AmongoState *
module_state(PyObject *m)
{
    return (AmongoState *)PyModule_GetState(m);
}

PyObject *
amongo_module_debug_counters(void)
{
#define C(name) #name, (long)atomic_load(&amongo_counters.name)
    return Py_BuildValue("{s:l,s:l,s:l,s:l,s:l,s:l,s:l,s:l,s:l}", C(jobs_submitted),
                         C(jobs_completed), C(jobs_live), C(replies_live), C(workers_live),
                         C(workers_started), C(wakeups), C(drains), C(jobs_cancelled));
#undef C
}

static PyObject *
mod_debug_counters(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    return amongo_module_debug_counters();
}

static PyObject *
mod_set_finalizing(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    amongo_finalize_begin();
    Py_RETURN_NONE;
}

static PyObject *
mod_exiting(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    return PyBool_FromLong(amongo_exiting());
}

static PyObject *
mod_flush_logs(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    amongo_log_flush(module_state(m));
    Py_RETURN_NONE;
}

/* Test hook: log a message through libmongoc's logger, from this thread (checks the bridge). */
static PyObject *
mod_mongoc_log(PyObject *m, PyObject *args)
{
    (void)m;
    int level;
    const char *domain, *message;
    if (!PyArg_ParseTuple(args, "iss", &level, &domain, &message))
        return NULL;
    mongoc_log((mongoc_log_level_t)level, domain, "%s", message);
    Py_RETURN_NONE;
}

static PyObject *
mod_exception_classes(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    AmongoState *st = module_state(m);
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
#define ADD(name) \
    if (!strncmp(#name, "exc_", 4) && PyDict_SetItemString(d, #name + 4, st->name) < 0) { \
        Py_DECREF(d); \
        return NULL; \
    }
    AMONGO_STATE_OBJECTS(ADD)
#undef ADD
    return d;
}

/* The BSON codec's test and benchmark entry points (codec.h): bson.decode, bson.decode_all and
 * bson.encode, natively. */
static PyObject *
mod_bson_decode(PyObject *m, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data", "codec_options", NULL};
    PyObject *data, *options = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:bson_decode", kwlist, &data, &options))
        return NULL;
    return amongo_decode_object(module_state(m), data, options, false);
}

static PyObject *
mod_bson_decode_all(PyObject *m, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data", "codec_options", NULL};
    PyObject *data, *options = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:bson_decode_all", kwlist, &data, &options))
        return NULL;
    return amongo_decode_object(module_state(m), data, options, true);
}

static PyObject *
mod_bson_encode(PyObject *m, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"document", "check_keys", "codec_options", NULL};
    PyObject *doc, *options = Py_None;
    int check_keys = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|pO:bson_encode", kwlist, &doc, &check_keys,
                                     &options))
        return NULL;
    AmongoBuffer buf;
    amongo_buffer_init(&buf);
    unsigned flags = AMONGO_ENCODE_ID_FIRST | (check_keys ? AMONGO_ENCODE_CHECK_KEYS : 0);
    PyObject *result = NULL;
    if (amongo_encode_document(module_state(m), doc, options, flags, &buf) == 0)
        result = PyBytes_FromStringAndSize((const char *)buf.data, (Py_ssize_t)buf.len);
    amongo_buffer_free(&buf);
    return result;
}

static PyMethodDef module_methods[] = {
    {"debug_counters", mod_debug_counters, METH_NOARGS,
     "C debug counters: jobs submitted/completed/live, replies live, workers, wake-ups, drains."},
    {"_set_finalizing", mod_set_finalizing, METH_NOARGS, "interpreter exit: workers stop using the GIL"},
    {"exiting", mod_exiting, METH_NOARGS,
     "True from the interpreter-exit hook on: finalizers do no Python-level work then."},
    {"flush_logs", mod_flush_logs, METH_NOARGS, "deliver parked libmongoc log messages to logging"},
    {"_mongoc_log", mod_mongoc_log, METH_VARARGS, "_mongoc_log(level, domain, message) (tests)"},
    {"exception_classes", mod_exception_classes, METH_NOARGS, "the pymongo.errors classes in use"},
    {"bson_decode", (PyCFunction)(void (*)(void))mod_bson_decode, METH_VARARGS | METH_KEYWORDS,
     "bson_decode(data, codec_options=None): one document, as bson.decode (native codec)"},
    {"bson_decode_all", (PyCFunction)(void (*)(void))mod_bson_decode_all, METH_VARARGS | METH_KEYWORDS,
     "bson_decode_all(data, codec_options=None): concatenated documents, as bson.decode_all"},
    {"bson_encode", (PyCFunction)(void (*)(void))mod_bson_encode, METH_VARARGS | METH_KEYWORDS,
     "bson_encode(document, check_keys=False, codec_options=None) -> bytes, as bson.encode"},
    {NULL},
};

static int
module_exec(PyObject *m)
{
    pthread_once(&process_once, process_init);
    AmongoState *st = module_state(m);

    PyObject *mod = PyImport_ImportModule("asyncio");
    if (!mod)
        return -1;
    st->get_running_loop = PyObject_GetAttrString(mod, "get_running_loop");
    Py_DECREF(mod);
    if (!st->get_running_loop)
        return -1;

    mod = PyImport_ImportModule("bson");
    if (!mod)
        return -1;
    /* PyMongo's C codec entry points, without the Python wrappers' argument checks. */
    st->bson_to_dict = PyObject_GetAttrString(mod, "_bson_to_dict");
    st->decode_all = PyObject_GetAttrString(mod, "_decode_all");
    st->default_codec_options = PyObject_GetAttrString(mod, "DEFAULT_CODEC_OPTIONS");
    Py_DECREF(mod);
    if (!st->bson_to_dict || !st->decode_all || !st->default_codec_options)
        return -1;

    mod = PyImport_ImportModule("logging");
    if (!mod)
        return -1;
    st->logger = PyObject_CallMethod(mod, "getLogger", "s", "asyncmongo");
    Py_DECREF(mod);
    if (!st->logger)
        return -1;

#define INTERN(field, text) \
    if (!(st->field = PyUnicode_InternFromString(text))) \
        return -1;
    INTERN(str_create_future, "create_future");
    INTERN(str_set_result, "set_result");
    INTERN(str_set_exception, "set_exception");
    INTERN(str_done, "done");
    INTERN(str_add_reader, "add_reader");
    INTERN(str_call_soon_threadsafe, "call_soon_threadsafe");
    INTERN(str_drain, "drain");
#undef INTERN

    if (amongo_errors_init(st) < 0 || amongo_queue_init_type(m, st) < 0 ||
        amongo_client_init_type(m, st) < 0 || amongo_jobs_init_types(m, st) < 0 ||
        amongo_codec_init(m, st) < 0 || amongo_topology_init_types(m, st) < 0 ||
        amongo_sdam_init_types(m, st) < 0)
        return -1;

#define CONST(name) \
    if (PyModule_AddIntConstant(m, #name, AMONGO_##name) < 0) \
        return -1;
    CONST(OP_COMMAND) CONST(OP_READ) CONST(OP_WRITE) CONST(OP_READ_WRITE) CONST(OP_INSERT)
    CONST(OP_BULK) CONST(OP_SESSION_START) CONST(OP_TXN_START) CONST(OP_TXN_COMMIT)
    CONST(OP_TXN_ABORT) CONST(OP_SESSION_END) CONST(OP_SELECT_SERVER)
    CONST(RES_DOC) CONST(RES_FIRST) CONST(RES_CURSOR) CONST(RES_WRITE) CONST(RES_BULK)
    CONST(RES_NONE) CONST(RES_STREAM) CONST(RES_SESSION) CONST(RES_SERVER)
    CONST(SDAM_SERVER_OPENING) CONST(SDAM_SERVER_CLOSED) CONST(SDAM_SERVER_CHANGED)
    CONST(SDAM_TOPOLOGY_OPENING) CONST(SDAM_TOPOLOGY_CLOSED) CONST(SDAM_TOPOLOGY_CHANGED)
    CONST(SDAM_HEARTBEAT_STARTED) CONST(SDAM_HEARTBEAT_SUCCEEDED) CONST(SDAM_HEARTBEAT_FAILED)
    CONST(BULK_INSERT) CONST(BULK_UPDATE_ONE) CONST(BULK_UPDATE_MANY) CONST(BULK_REPLACE_ONE)
    CONST(BULK_DELETE_ONE) CONST(BULK_DELETE_MANY)
    CONST(FLAG_PIN) CONST(FLAG_BYPASS) CONST(FLAG_QUIET) CONST(FLAG_MAX_TIME) CONST(FLAG_RETRY)
    CONST(FLAG_TXN_NUMBER) CONST(FLAG_MAX_AWAIT)
#undef CONST
    if (PyModule_AddStringConstant(m, "MONGOC_VERSION", mongoc_get_version()) < 0 ||
        PyModule_AddStringConstant(m, "BSON_VERSION", bson_get_version()) < 0)
        return -1;
    return 0;
}

static int
module_traverse(PyObject *m, visitproc visit, void *arg)
{
    AmongoState *st = module_state(m);
#define VISIT(name) Py_VISIT(st->name);
    AMONGO_STATE_OBJECTS(VISIT)
#undef VISIT
    return 0;
}

static int
module_clear(PyObject *m)
{
    AmongoState *st = module_state(m);
#define CLEAR(name) Py_CLEAR(st->name);
    AMONGO_STATE_OBJECTS(CLEAR)
#undef CLEAR
    return 0;
}

static void
module_free(void *m)
{
    module_clear((PyObject *)m);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "asyncmongo._core",
    .m_doc = "The C core of asyncmongo: jobs, native worker threads, completion queues, errors.",
    .m_size = sizeof(AmongoState),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&module_def);
}

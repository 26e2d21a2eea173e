/* codec.c: what the BSON codec's two halves share: the bson classes and names loaded once at module
 * init, CodecOptions read once per call, the native output buffer, and the _type_marker lookup.
 * It must stay exact to PyMongo's bson: each rule here is one bson applies (bson/_cbsonmodule.c). */
#include "codec.h"

#include <datetime.h>
#include <structmember.h>

int64_t amongo_codec_min_millis, amongo_codec_max_millis;
Py_ssize_t amongo_codec_raw_view_threshold;

void
amongo_buffer_init(AmongoBuffer *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

void
amongo_buffer_free(AmongoBuffer *b)
{
    free(b->data);
    amongo_buffer_init(b);
}

int
amongo_buffer_reserve(AmongoBuffer *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len) {
        PyErr_NoMemory();
        return -1;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    uint8_t *data = realloc(b->data, cap);
    if (!data) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

void
amongo_codec_raise(PyObject *exc_class, const char *msg)
{
    PyErr_SetString(exc_class, msg);
}

PyObject **
amongo_codec_slot(PyObject *obj, PyObject *member_descr)
{
    /* A __slots__ member of a class we loaded at init: its offset in the instance. */
    return (PyObject **)((char *)obj + ((PyMemberDescrObject *)member_descr)->d_member->offset);
}

/* bson's _type_marker(): the object's _type_marker attribute when it is exactly an int, else 0. On
 * 3.11 bson asks hasattr() then getattr(); for a type with the generic getattr, no instance dict and
 * no descriptor in the way, the class attribute is that answer, found without raising and clearing
 * an AttributeError (datetime, UUID, ObjectId and Int64 values all take this path). */
long
amongo_codec_type_marker(AmongoState *st, PyObject *obj)
{
    PyTypeObject *tp = Py_TYPE(obj);
    PyObject *marker;
    if (tp->tp_getattro == PyObject_GenericGetAttr && tp->tp_dictoffset == 0) {
        marker = _PyType_Lookup(tp, st->codec_s_type_marker); /* borrowed */
        if (!marker)
            return 0;
        if (!Py_TYPE(marker)->tp_descr_get)
            return PyLong_CheckExact(marker) ? PyLong_AsLong(marker) : 0;
    }
    if (!PyObject_HasAttr(obj, st->codec_s_type_marker))
        return 0;
    marker = PyObject_GetAttr(obj, st->codec_s_type_marker);
    if (!marker)
        return -1;
    long type = PyLong_CheckExact(marker) ? PyLong_AsLong(marker) : 0;
    Py_DECREF(marker);
    return type;
}

/* Reads a CodecOptions as bson's convert_codec_options does (same tuple format, same errors), plus
 * what tells the native codec to hand the call to bson. */
static int opts_parse(AmongoState *st, PyObject *options, AmongoCodecOpts *o);

/* bson.DEFAULT_CODEC_OPTIONS, read once: module state keeps it alive, so the borrowed pointers stay
 * valid while `default_for` is the object state holds (a new module, a new object: read again). */
static AmongoCodecOpts default_opts;
static PyObject *default_for;

int
amongo_codec_opts_parse(AmongoState *st, PyObject *options, AmongoCodecOpts *o)
{
    if (!options || options == Py_None)
        options = st->default_codec_options;
    if (options == st->default_codec_options) {
        if (default_for != options) {
            if (opts_parse(st, options, &default_opts) < 0)
                return -1;
            default_for = options;
        }
        *o = default_opts;
        return 0;
    }
    return opts_parse(st, options, o);
}

static int
opts_parse(AmongoState *st, PyObject *options, AmongoCodecOpts *o)
{
    PyObject *registry;
    char tz_aware, uuid_rep, dt_conv;
    const char *errors = NULL;
    int ok = PyObject_IsInstance(options, st->codec_CodecOptions);
    if (ok < 0)
        return -1;
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "codec_options must be an instance of CodecOptions");
        return -1;
    }
    if (!PyArg_ParseTuple(options, "ObbzOOb", &o->document_class, &tz_aware, &uuid_rep, &errors,
                          &o->tzinfo, &registry, &dt_conv))
        return -1;
    o->options = options;
    o->tz_aware = tz_aware;
    o->uuid_rep = uuid_rep;
    o->dt_conv = dt_conv;
    o->errors = (errors && strcmp(errors, "strict") != 0) ? errors : NULL;
    o->dict_class = o->document_class == (PyObject *)&PyDict_Type;
    o->raw_class = false;
    if (!o->dict_class) {
        long marker = amongo_codec_type_marker(st, o->document_class);
        if (marker < 0)
            return -1;
        o->raw_class = marker == 101;
    }

    /* The registry's maps, as bson reads them: a decoder for any type changes every value of that
     * type (bson's own classes included), so such a call is bson's; likewise encoders and a
     * fallback encoder for encoding. */
    PyObject *map = PyObject_GetAttr(registry, st->codec_s_decoder_map);
    if (!map)
        return -1;
    Py_ssize_t n = PyObject_Size(map);
    Py_DECREF(map);
    if (n < 0)
        return -1;
    o->has_decoders = n > 0;
    map = PyObject_GetAttr(registry, st->codec_s_encoder_map);
    if (!map)
        return -1;
    n = PyObject_Size(map);
    Py_DECREF(map);
    if (n < 0)
        return -1;
    PyObject *fallback = PyObject_GetAttr(registry, st->codec_s_fallback_encoder);
    if (!fallback)
        return -1;
    o->has_encoders = n > 0 || fallback != Py_None;
    Py_DECREF(fallback);
    return 0;
}

static int
load(PyObject **field, const char *module, const char *name)
{
    PyObject *mod = PyImport_ImportModule(module);
    if (!mod)
        return -1;
    *field = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    return *field ? 0 : -1;
}

static int
load_int64(int64_t *out, const char *module, const char *name)
{
    PyObject *v;
    if (load(&v, module, name) < 0)
        return -1;
    long long x = PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    *out = x;
    return 0;
}

/* A __slots__ member descriptor, checked to be one (the codec writes through its offset). */
static int
load_slot(PyObject **field, PyObject *cls, const char *name)
{
    PyObject *dict = ((PyTypeObject *)cls)->tp_dict;
    PyObject *d = dict ? PyDict_GetItemString(dict, name) : NULL; /* borrowed */
    if (!d || Py_TYPE(d) != &PyMemberDescr_Type ||
        ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_ImportError, "asyncmongo: %R has no slot %s", cls, name);
        return -1;
    }
    Py_INCREF(d);
    *field = d;
    return 0;
}

int
amongo_codec_init(PyObject *module, AmongoState *st)
{
    (void)module;
    PyDateTime_IMPORT;
    if (!PyDateTimeAPI || amongo_decode_init() < 0 || amongo_encode_init() < 0)
        return -1;
    if (load(&st->codec_ObjectId, "bson.objectid", "ObjectId") < 0 ||
        load(&st->codec_Int64, "bson.int64", "Int64") < 0 ||
        load(&st->codec_Binary, "bson.binary", "Binary") < 0 ||
        load(&st->codec_Code, "bson.code", "Code") < 0 ||
        load(&st->codec_Regex, "bson.regex", "Regex") < 0 ||
        load(&st->codec_DBRef, "bson.dbref", "DBRef") < 0 ||
        load(&st->codec_Timestamp, "bson.timestamp", "Timestamp") < 0 ||
        load(&st->codec_MinKey, "bson.min_key", "MinKey") < 0 ||
        load(&st->codec_MaxKey, "bson.max_key", "MaxKey") < 0 ||
        load(&st->codec_Decimal128, "bson.decimal128", "Decimal128") < 0 ||
        load(&st->codec_DatetimeMS, "bson.datetime_ms", "DatetimeMS") < 0 ||
        load(&st->codec_min_datetime, "bson.datetime_ms", "_MIN_UTC") < 0 ||
        load(&st->codec_max_datetime, "bson.datetime_ms", "_MAX_UTC") < 0 ||
        load(&st->codec_UUID, "uuid", "UUID") < 0 ||
        load(&st->codec_utc, "bson.tz_util", "utc") < 0 ||
        load(&st->codec_Mapping, "collections.abc", "Mapping") < 0 ||
        load(&st->abc_MutableMapping, "collections.abc", "MutableMapping") < 0 ||
        load(&st->codec_Pattern, "re", "Pattern") < 0 ||
        load(&st->codec_CodecOptions, "bson.codec_options", "CodecOptions") < 0 ||
        load(&st->codec_dict_to_bson, "bson", "_dict_to_bson") < 0 ||
        load(&st->codec_InvalidBSON, "bson.errors", "InvalidBSON") < 0 ||
        load(&st->codec_InvalidDocument, "bson.errors", "InvalidDocument") < 0 ||
        load(&st->codec_InvalidStringData, "bson.errors", "InvalidStringData") < 0 ||
        load(&st->codec_BSONError, "bson.errors", "BSONError") < 0 ||
        load_int64(&amongo_codec_min_millis, "bson.datetime_ms", "_MIN_UTC_MS") < 0 ||
        load_int64(&amongo_codec_max_millis, "bson.datetime_ms", "_MAX_UTC_MS") < 0)
        return -1;
    int64_t threshold;
    if (load_int64(&threshold, "bson.codec_options", "_RAW_BSON_VIEW_THRESHOLD") < 0)
        return -1;
    amongo_codec_raw_view_threshold = (Py_ssize_t)threshold;

    PyObject *safe;
    if (load(&safe, "uuid", "SafeUUID") < 0)
        return -1;
    st->codec_SafeUUID_unknown = PyObject_GetAttrString(safe, "unknown");
    Py_DECREF(safe);
    if (!st->codec_SafeUUID_unknown)
        return -1;

    /* Objects the decoder builds without running their Python __init__: only classes whose
     * __init__ does nothing but set these slots from the values we give (checked by the tests
     * against the classes' own constructors). */
    if (!PyType_Check(st->codec_ObjectId) || !PyType_Check(st->codec_UUID) ||
        load_slot(&st->codec_oid_slot, st->codec_ObjectId, "_ObjectId__id") < 0 ||
        load_slot(&st->codec_uuid_int_slot, st->codec_UUID, "int") < 0 ||
        load_slot(&st->codec_uuid_safe_slot, st->codec_UUID, "is_safe") < 0)
        return -1;

#define INTERN(field, text) \
    if (!(st->field = PyUnicode_InternFromString(text))) \
        return -1;
    INTERN(codec_s_type_marker, "_type_marker");
    INTERN(codec_s_binary, "binary");
    INTERN(codec_s_subtype, "subtype");
    INTERN(codec_s_scope, "scope");
    INTERN(codec_s_inc, "inc");
    INTERN(codec_s_time, "time");
    INTERN(codec_s_bid, "bid");
    INTERN(codec_s_flags, "flags");
    INTERN(codec_s_pattern, "pattern");
    INTERN(codec_s_id, "_id");
    INTERN(codec_s_dollar_ref, "$ref");
    INTERN(codec_s_dollar_id, "$id");
    INTERN(codec_s_dollar_db, "$db");
    INTERN(codec_s_as_doc, "as_doc");
    INTERN(codec_s_utcoffset, "utcoffset");
    INTERN(codec_s_astimezone, "astimezone");
    INTERN(codec_s_from_uuid, "from_uuid");
    INTERN(codec_s_as_uuid, "as_uuid");
    INTERN(codec_s_from_bid, "from_bid");
    INTERN(codec_s_raw, "raw");
    INTERN(codec_s_encoder_map, "_encoder_map");
    INTERN(codec_s_decoder_map, "_decoder_map");
    INTERN(codec_s_fallback_encoder, "_fallback_encoder");
#undef INTERN

    /* The key cache's storage lives in a capsule in module state: clearing the module drops its
     * strings. */
    void *cache = amongo_decode_key_cache_new();
    if (!cache)
        return -1;
    st->codec_key_cache = PyCapsule_New(cache, "asyncmongo._core.key_cache",
                                        amongo_decode_key_cache_free);
    if (!st->codec_key_cache) {
        free(cache);
        return -1;
    }
    return 0;
}

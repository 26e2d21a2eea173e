/* codec.h: the core's own BSON codec (decode.c, encode.c, codec.c): Python objects from BSON bytes and
 * BSON bytes from Python objects, giving exactly what PyMongo's `bson` gives for the same input and the
 * same CodecOptions, and handing to `bson` itself whatever it does not do natively (type registries).
 * Every function here needs the GIL, except amongo_buffer_free. */
#ifndef AMONGO_CODEC_H
#define AMONGO_CODEC_H

#include "asyncmongo.h"

void amongo_buffer_init(AmongoBuffer *b);
void amongo_buffer_free(AmongoBuffer *b); /* no GIL needed; leaves an empty buffer */
int amongo_buffer_reserve(AmongoBuffer *b, size_t extra); /* 0, or -1 with MemoryError */

/* Flags of amongo_encode_document. */
#define AMONGO_ENCODE_ID_FIRST 0x1   /* a top-level document, as bson.encode: _id first, and an
                                      * InvalidDocument inside it reworded "Invalid document: ..." with
                                      * the document attached, as PyMongo does */
#define AMONGO_ENCODE_CHECK_KEYS 0x2 /* refuse keys starting with '$' or containing '.' (check_keys) */

/* codec_options: a bson.codec_options.CodecOptions, or NULL / None for bson.DEFAULT_CODEC_OPTIONS;
 * anything else raises TypeError as bson does. */

/* NEW: the one document in data[0:len], as bson.decode(data, codec_options); NULL with bson's
 * exception (InvalidBSON and friends). data is only read during the call. */
PyObject *amongo_decode_document(AmongoState *st, const uint8_t *data, size_t len,
                                 PyObject *codec_options);

/* NEW list: the concatenated documents in data[0:len], as bson.decode_all(data, codec_options). */
PyObject *amongo_decode_documents(AmongoState *st, const uint8_t *data, size_t len,
                                  PyObject *codec_options);

/* NEW: as above from any bytes-like object (buffer protocol, read in place, no copy); a bytes object
 * is also the owner of RawBSONDocument views, as in bson. all: decode_all instead of decode. */
PyObject *amongo_decode_object(AmongoState *st, PyObject *data, PyObject *codec_options, bool all);

/* Appends one document (a Mapping, or a RawBSONDocument copied as its raw bytes) to out. Returns 0,
 * or -1 with PyMongo's exception and out->len as it was before the call. */
int amongo_encode_document(AmongoState *st, PyObject *doc, PyObject *codec_options, unsigned flags,
                           AmongoBuffer *out);

/* codec.c: loads the bson classes, exceptions and names the codec uses into st (module init). */
int amongo_codec_init(PyObject *module, AmongoState *st);

/* ---- shared by codec.c, decode.c and encode.c only ---- */

/* A CodecOptions read once per call. Pointers are borrowed from `options`, which the caller keeps
 * alive for the call. */
typedef struct AmongoCodecOpts {
    PyObject *options;        /* the CodecOptions */
    PyObject *document_class;
    PyObject *tzinfo;         /* Py_None when unset */
    const char *errors;       /* unicode_decode_error_handler; NULL for "strict" */
    int tz_aware;
    int uuid_rep;
    int dt_conv;
    bool dict_class;          /* document_class is exactly dict */
    bool raw_class;           /* document_class has _type_marker 101 (RawBSONDocument) */
    bool has_decoders;        /* type_registry decodes some type: bson does the call */
    bool has_encoders;        /* type_registry encodes some type or has a fallback encoder */
} AmongoCodecOpts;

/* UuidRepresentation and DatetimeConversion values (bson.binary, bson.codec_options). */
enum { AMONGO_UUID_UNSPECIFIED = 0, AMONGO_UUID_STANDARD = 4, AMONGO_UUID_PYTHON_LEGACY = 3,
       AMONGO_UUID_JAVA_LEGACY = 5, AMONGO_UUID_CSHARP_LEGACY = 6 };
enum { AMONGO_DT_DATETIME = 1, AMONGO_DT_CLAMP = 2, AMONGO_DT_MS = 3, AMONGO_DT_AUTO = 4 };

/* Deepest nesting the codec follows, whatever sys.getrecursionlimit() says: past it the C stack
 * could overflow. Python's own limit (1000 by default) is met first in ordinary runs. */
#define AMONGO_CODEC_MAX_DEPTH 2500

/* bson.datetime_ms._MIN_UTC_MS / _MAX_UTC_MS and bson.codec_options._RAW_BSON_VIEW_THRESHOLD, read at
 * init (constants of the bson package). */
extern int64_t amongo_codec_min_millis, amongo_codec_max_millis;
extern Py_ssize_t amongo_codec_raw_view_threshold;

int amongo_codec_opts_parse(AmongoState *st, PyObject *options, AmongoCodecOpts *out);
void amongo_codec_raise(PyObject *exc_class, const char *msg);
long amongo_codec_type_marker(AmongoState *st, PyObject *obj); /* marker, 0 for none, -1 + error */
PyObject **amongo_codec_slot(PyObject *obj, PyObject *member_descr); /* BORROWED slot address */

/* datetime.h's C API pointer is static to each file that includes it: each half imports its own. */
int amongo_decode_init(void);
int amongo_encode_init(void);

/* decode.c: the key cache (a capsule in module state; its destructor drops the cached strings). */
void *amongo_decode_key_cache_new(void);              /* NULL + MemoryError */
void amongo_decode_key_cache_free(PyObject *capsule); /* PyCapsule destructor */

#endif

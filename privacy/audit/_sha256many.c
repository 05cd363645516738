/* SHA-256 of many short messages in one call, for the audit log (privacy/audit/sha256.py).
 *
 * Python's hashlib costs ~0.45 us a call on top of the hashing itself, whatever drives it;
 * the audit log hashes two messages a record (its leaf, and a node of the Merkle tree), so
 * a 1M-person run spends ~9 CPU seconds in calls. Here the loop runs in C, through
 * OpenSSL's EVP interface (the same library hashlib uses), with the GIL released.
 *
 * Three functions, all returning the 32-byte digests concatenated:
 *   slices(data, offsets, prefix=b"")  SHA-256(prefix || data[offsets[i]:offsets[i+1]])
 *                                      offsets: a buffer of int32 or int64, n + 1 of them
 *   chunks(data, width, prefix=b"")    SHA-256(prefix || each consecutive width bytes)
 *   gathered(n, pieces)                SHA-256 of record i's pieces, one after another, for
 *                                      i < n; a piece is (data, width): record i's bytes are
 *                                      data[i*width:(i+1)*width], or (data, offsets, codes):
 *                                      value j is data[offsets[j]:offsets[j+1]] and record i's
 *                                      is value codes[i] (codes int64), or value i (codes None)
 * gathered() copies a record's pieces next to each other and hashes them in one call: the
 * audit leaf is columns side by side, and joining them first for slices() wrote every
 * leaf's bytes out once more (privacy/audit/leaf.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#define DIGEST 32

typedef struct {
    EVP_MD_CTX *ctx;
    EVP_MD *fetched; /* OpenSSL 3: fetched once, not on every init */
    const EVP_MD *md;
} hasher;

static int hasher_open(hasher *h) {
    h->ctx = EVP_MD_CTX_new();
    h->fetched = NULL;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    h->fetched = EVP_MD_fetch(NULL, "SHA256", NULL);
    h->md = h->fetched;
#else
    h->md = EVP_sha256();
#endif
    return h->ctx != NULL && h->md != NULL;
}

static void hasher_close(hasher *h) {
    EVP_MD_CTX_free(h->ctx);
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    EVP_MD_free(h->fetched);
#endif
}

static int digest(hasher *h, const unsigned char *prefix, size_t prefix_len,
                  const unsigned char *data, size_t len, unsigned char *out) {
    return EVP_DigestInit_ex(h->ctx, h->md, NULL)
        && (prefix_len == 0 || EVP_DigestUpdate(h->ctx, prefix, prefix_len))
        && EVP_DigestUpdate(h->ctx, data, len)
        && EVP_DigestFinal_ex(h->ctx, out, NULL);
}

static long long offset_at(const Py_buffer *offsets, Py_ssize_t i) {
    if (offsets->itemsize == 4)
        return ((const int32_t *)offsets->buf)[i];
    return ((const int64_t *)offsets->buf)[i];
}

static PyObject *hash_loop_failed(void) {
    PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not compute a SHA-256 digest");
    return NULL;
}

static int typed_offsets(PyObject *obj, Py_buffer *view, Py_ssize_t data_len) {
    if (PyObject_GetBuffer(obj, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
        return 0;
    const char *f = view->format ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    int integer = (*f == 'i' || *f == 'l' || *f == 'q') && f[1] == '\0';
    if (view->ndim != 1 || !integer || (view->itemsize != 4 && view->itemsize != 8)) {
        PyErr_SetString(PyExc_TypeError, "offsets must be a 1-d array of int32 or int64");
        goto bad;
    }
    if (view->shape[0] < 1) {
        PyErr_SetString(PyExc_ValueError, "offsets must hold at least one value");
        goto bad;
    }
    for (Py_ssize_t i = 0; i < view->shape[0]; i++) {
        long long at = offset_at(view, i);
        if (at < 0 || at > data_len || (i > 0 && at < offset_at(view, i - 1))) {
            PyErr_Format(PyExc_ValueError,
                         "offset %zd (%lld) lies outside the data or before the one ahead of it",
                         i, at);
            goto bad;
        }
    }
    return 1;
bad:
    PyBuffer_Release(view);
    return 0;
}

static PyObject *slices(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"data", "offsets", "prefix", NULL};
    Py_buffer data, offsets, prefix = {0};
    PyObject *offsets_obj, *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*O|y*", names, &data, &offsets_obj, &prefix))
        return NULL;
    if (!typed_offsets(offsets_obj, &offsets, data.len))
        goto done;
    Py_ssize_t n = offsets.shape[0] - 1;
    out = PyBytes_FromStringAndSize(NULL, n * DIGEST);
    if (out != NULL) {
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
        const unsigned char *src = data.buf;
        int ok = 1, moved = 0;
        hasher h;
        Py_BEGIN_ALLOW_THREADS
        ok = hasher_open(&h);
        /* Without the GIL another thread may write to the offsets after typed_offsets
         * checked them: read each one once and check it again before it is used. */
        long long a = offset_at(&offsets, 0);
        moved = a < 0 || a > data.len;
        for (Py_ssize_t i = 0; ok && !moved && i < n; i++) {
            long long b = offset_at(&offsets, i + 1);
            if (b < a || b > data.len) {
                moved = 1;
                break;
            }
            ok = digest(&h, prefix.buf, prefix.len, src + a, (size_t)(b - a), dst + i * DIGEST);
            a = b;
        }
        hasher_close(&h);
        Py_END_ALLOW_THREADS
        if (moved) {
            Py_CLEAR(out);
            PyErr_SetString(PyExc_ValueError, "the offsets changed while they were hashed");
        } else if (!ok) {
            Py_CLEAR(out);
            hash_loop_failed();
        }
    }
    PyBuffer_Release(&offsets);
done:
    PyBuffer_Release(&data);
    if (prefix.obj != NULL)
        PyBuffer_Release(&prefix);
    return out;
}

static PyObject *chunks(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"data", "width", "prefix", NULL};
    Py_buffer data, prefix = {0};
    Py_ssize_t width;
    PyObject *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*n|y*", names, &data, &width, &prefix))
        return NULL;
    if (width <= 0 || data.len % width) {
        PyErr_Format(PyExc_ValueError, "%zd bytes are not whole chunks of %zd", data.len, width);
        goto done;
    }
    Py_ssize_t n = data.len / width;
    out = PyBytes_FromStringAndSize(NULL, n * DIGEST);
    if (out != NULL) {
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
        const unsigned char *src = data.buf;
        int ok = 1;
        hasher h;
        Py_BEGIN_ALLOW_THREADS
        ok = hasher_open(&h);
        for (Py_ssize_t i = 0; ok && i < n; i++)
            ok = digest(&h, prefix.buf, prefix.len, src + i * width, (size_t)width, dst + i * DIGEST);
        hasher_close(&h);
        Py_END_ALLOW_THREADS
        if (!ok) {
            Py_CLEAR(out);
            hash_loop_failed();
        }
    }
done:
    PyBuffer_Release(&data);
    if (prefix.obj != NULL)
        PyBuffer_Release(&prefix);
    return out;
}


/* One piece of gathered(): fixed width, or values picked by offsets (and codes). */
typedef struct {
    Py_buffer data, offsets, codes;
    Py_ssize_t width;   /* > 0: fixed width; 0: by offsets */
    Py_ssize_t values;  /* offsets: values held (offsets - 1) */
    int has_offsets, has_codes;
} piece;

static void piece_release(piece *p) {
    PyBuffer_Release(&p->data);
    if (p->has_offsets)
        PyBuffer_Release(&p->offsets);
    if (p->has_codes)
        PyBuffer_Release(&p->codes);
}

static int piece_open(PyObject *item, Py_ssize_t n, piece *p) {
    memset(p, 0, sizeof(*p));
    PyObject *data, *second, *codes = Py_None;
    if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "OO|O", &data, &second, &codes)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "a piece is (data, width) or (data, offsets, codes)");
        return 0;
    }
    if (PyObject_GetBuffer(data, &p->data, PyBUF_SIMPLE) < 0)
        return 0;
    if (PyLong_Check(second)) {
        p->width = PyLong_AsSsize_t(second);
        if (p->width <= 0 || p->data.len != n * p->width) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "a fixed piece of width %zd must hold %zd records"
                             " in %zd bytes, not %zd", p->width, n, n * p->width, p->data.len);
            goto bad;
        }
        return 1;
    }
    if (!typed_offsets(second, &p->offsets, p->data.len))
        goto bad;
    p->has_offsets = 1;
    p->values = p->offsets.shape[0] - 1;
    if (codes == Py_None) {
        if (p->values != n) {
            PyErr_Format(PyExc_ValueError, "%zd values for %zd records and no codes", p->values, n);
            goto bad;
        }
        return 1;
    }
    if (PyObject_GetBuffer(codes, &p->codes, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
        goto bad;
    p->has_codes = 1;
    const char *f = p->codes.format ? p->codes.format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    if (p->codes.ndim != 1 || p->codes.itemsize != 8 || !(*f == 'l' || *f == 'q') || f[1] != '\0'
        || p->codes.shape[0] != n) {
        PyErr_Format(PyExc_TypeError, "codes must be a 1-d array of %zd int64", n);
        goto bad;
    }
    return 1;
bad:
    piece_release(p);
    return 0;
}

/* Record i's bytes of piece p (start and length), or 0 when they lie outside its data:
 * the buffers may be written by another thread while the GIL is released. */
static int piece_at(const piece *p, Py_ssize_t i, Py_ssize_t *start, Py_ssize_t *len) {
    if (p->width) {
        *start = i * p->width;
        *len = p->width;
        return 1;
    }
    long long j = p->has_codes ? ((const int64_t *)p->codes.buf)[i] : i;
    if (j < 0 || j >= p->values)
        return 0;
    long long a = offset_at(&p->offsets, (Py_ssize_t)j), b = offset_at(&p->offsets, (Py_ssize_t)j + 1);
    if (a < 0 || b < a || b > p->data.len)
        return 0;
    *start = (Py_ssize_t)a;
    *len = (Py_ssize_t)(b - a);
    return 1;
}

static PyObject *gathered(PyObject *self, PyObject *args) {
    Py_ssize_t n;
    PyObject *list, *out = NULL;
    if (!PyArg_ParseTuple(args, "nO", &n, &list))
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "n must not be negative");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(list, "pieces must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq), opened = 0;
    piece *pieces = PyMem_Calloc(k ? k : 1, sizeof(piece));
    if (pieces == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (; opened < k; opened++)
        if (!piece_open(PySequence_Fast_GET_ITEM(seq, opened), n, &pieces[opened]))
            goto done;
    out = PyBytes_FromStringAndSize(NULL, n * DIGEST);
    if (out != NULL) {
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
        int ok = 1, outside = 0, memory = 0;
        hasher h;
        Py_BEGIN_ALLOW_THREADS
        size_t room = 4096;
        unsigned char *leaf = malloc(room);
        ok = hasher_open(&h) && leaf != NULL;
        memory = leaf == NULL;
        for (Py_ssize_t i = 0; ok && i < n; i++) {
            size_t at = 0;
            for (Py_ssize_t q = 0; q < k; q++) {
                Py_ssize_t start, len;
                if (!piece_at(&pieces[q], i, &start, &len)) {
                    outside = 1;
                    break;
                }
                if (at + (size_t)len > room) {
                    while (at + (size_t)len > room)
                        room *= 2;
                    unsigned char *grown = realloc(leaf, room);
                    if (grown == NULL) {
                        memory = 1;
                        break;
                    }
                    leaf = grown;
                }
                memcpy(leaf + at, (const unsigned char *)pieces[q].data.buf + start, (size_t)len);
                at += (size_t)len;
            }
            if (outside || memory)
                break;
            ok = digest(&h, NULL, 0, leaf, at, dst + i * DIGEST);
        }
        free(leaf);
        hasher_close(&h);
        Py_END_ALLOW_THREADS
        if (outside || memory || !ok) {
            Py_CLEAR(out);
            if (memory)
                PyErr_NoMemory();
            else if (outside)
                PyErr_SetString(PyExc_ValueError,
                                "a code or offset lies outside its piece (or changed while hashed)");
            else
                hash_loop_failed();
        }
    }
done:
    for (Py_ssize_t q = 0; q < opened; q++)
        piece_release(&pieces[q]);
    PyMem_Free(pieces);
    Py_DECREF(seq);
    return out;
}

static PyMethodDef methods[] = {
    {"slices", (PyCFunction)(void (*)(void))slices, METH_VARARGS | METH_KEYWORDS,
     "slices(data, offsets, prefix=b'') -> SHA-256 of prefix + each slice, concatenated"},
    {"chunks", (PyCFunction)(void (*)(void))chunks, METH_VARARGS | METH_KEYWORDS,
     "chunks(data, width, prefix=b'') -> SHA-256 of prefix + each width-byte chunk, concatenated"},
    {"gathered", gathered, METH_VARARGS,
     "gathered(n, pieces) -> SHA-256 of each record's pieces side by side, concatenated"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sha256many",
    "SHA-256 of many messages in one call (privacy/audit/sha256.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__sha256many(void) { return PyModule_Create(&module); }

/* SHA-256 of many short messages in one call, for the audit log (privacy/audit/sha256.py).
 *
 * Python's hashlib costs ~0.45 us a call on top of the hashing itself, whatever drives it;
 * the audit log hashes two messages a record (its leaf, and a node of the Merkle tree), so
 * a 1M-person run spends ~9 CPU seconds in calls. Here the loop runs in C, through
 * OpenSSL's EVP interface (the same library hashlib uses), with the GIL released.
 *
 * Two functions, both returning the 32-byte digests concatenated:
 *   slices(data, offsets, prefix=b"")  SHA-256(prefix || data[offsets[i]:offsets[i+1]])
 *                                      offsets: a buffer of int32 or int64, n + 1 of them
 *   chunks(data, width, prefix=b"")    SHA-256(prefix || each consecutive width bytes)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>

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

static PyMethodDef methods[] = {
    {"slices", (PyCFunction)(void (*)(void))slices, METH_VARARGS | METH_KEYWORDS,
     "slices(data, offsets, prefix=b'') -> SHA-256 of prefix + each slice, concatenated"},
    {"chunks", (PyCFunction)(void (*)(void))chunks, METH_VARARGS | METH_KEYWORDS,
     "chunks(data, width, prefix=b'') -> SHA-256 of prefix + each width-byte chunk, concatenated"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sha256many",
    "SHA-256 of many messages in one call (privacy/audit/sha256.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__sha256many(void) { return PyModule_Create(&module); }

/* One connection's thread: reads whole wire messages, parses OP_MSG (and the legacy OP_QUERY handshake),
 * runs the command and writes the reply. Every length is checked against the bytes actually received
 * before anything is read; a message that does not parse closes the connection and never reaches the
 * store. */
#include "benchserver.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define OPCODE_REPLY 1
#define OPCODE_QUERY 2004
#define OPCODE_MSG 2013

#define MSG_CHECKSUM_PRESENT 0x1u
#define MSG_MORE_TO_COME 0x2u
#define MSG_EXHAUST_ALLOWED 0x10000u
#define REPLY_QUERY_FAILURE 0x2

#define HEADER_LEN 16
#define KEEP_BUFFER (4 * 1024 * 1024) /* larger per-connection buffers are freed after use */

static atomic_int next_request_id = 1;

static int32_t
rd32 (const uint8_t *p)
{
   return (int32_t) ((uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24);
}

static void
wr32 (uint8_t *p, int32_t v)
{
   uint32_t u = (uint32_t) v;
   for (int i = 0; i < 4; i++) {
      p[i] = (uint8_t) (u >> (8 * i));
   }
}

/* ---- documents of a write command ---- */

bool
amongo_doclist_init (amongo_doclist_t *dl, const amongo_request_t *req, const char *field)
{
   memset (dl, 0, sizeof *dl);
   for (int i = 0; i < req->nseqs; i++) {
      if (!strcmp (req->seqs[i].ident, field)) {
         dl->from_seq = true;
         dl->p = req->seqs[i].data;
         dl->end = dl->p + req->seqs[i].len;
         return true;
      }
   }
   bson_iter_t it;
   if (bson_iter_init_find (&it, &req->body, field) && BSON_ITER_HOLDS_ARRAY (&it) &&
       bson_iter_recurse (&it, &dl->arr)) {
      return true;
   }
   return false;
}

int
amongo_doclist_next (amongo_doclist_t *dl, bson_t *doc)
{
   if (dl->from_seq) {
      if (dl->p >= dl->end) {
         return 0;
      }
      /* Bounds were checked when the section was parsed. */
      int32_t len = rd32 (dl->p);
      if (!bson_init_static (doc, dl->p, (size_t) len)) {
         return -1;
      }
      dl->p += len;
      return 1;
   }
   if (!bson_iter_next (&dl->arr)) {
      return 0;
   }
   uint32_t len;
   const uint8_t *data;
   if (!BSON_ITER_HOLDS_DOCUMENT (&dl->arr)) {
      return -1;
   }
   bson_iter_document (&dl->arr, &len, &data);
   return bson_init_static (doc, data, len) ? 1 : -1;
}

/* ---- socket I/O ---- */

static int
read_full (int fd, uint8_t *p, size_t n)
{
   while (n) {
      ssize_t r = recv (fd, p, n, 0);
      if (r > 0) {
         p += r;
         n -= (size_t) r;
      } else if (r < 0 && errno == EINTR) {
         continue;
      } else {
         return -1;
      }
   }
   return 0;
}

static int
write_iov (int fd, struct iovec *iov, int iovcnt)
{
   while (iovcnt) {
      struct msghdr msg = {0};
      msg.msg_iov = iov;
      msg.msg_iovlen = (size_t) iovcnt;
      ssize_t w = sendmsg (fd, &msg, MSG_NOSIGNAL);
      if (w < 0) {
         if (errno == EINTR) {
            continue;
         }
         return -1;
      }
      size_t left = (size_t) w;
      while (iovcnt && left >= iov->iov_len) {
         left -= iov->iov_len;
         iov++;
         iovcnt--;
      }
      if (iovcnt) {
         iov->iov_base = (uint8_t *) iov->iov_base + left;
         iov->iov_len -= left;
      }
   }
   return 0;
}

static int
send_msg_reply (int fd, int32_t response_to, const bson_t *reply)
{
   uint8_t head[HEADER_LEN + 5];
   wr32 (head, (int32_t) (sizeof head + reply->len));
   wr32 (head + 4, atomic_fetch_add (&next_request_id, 1));
   wr32 (head + 8, response_to);
   wr32 (head + 12, OPCODE_MSG);
   wr32 (head + 16, 0);
   head[20] = 0; /* section kind 0: the body */
   struct iovec iov[2] = {{head, sizeof head}, {(void *) bson_get_data (reply), reply->len}};
   return write_iov (fd, iov, 2);
}

static int
send_op_reply (int fd, int32_t response_to, int32_t flags, const bson_t *doc)
{
   uint8_t head[HEADER_LEN + 20] = {0};
   wr32 (head, (int32_t) (sizeof head + doc->len));
   wr32 (head + 4, atomic_fetch_add (&next_request_id, 1));
   wr32 (head + 8, response_to);
   wr32 (head + 12, OPCODE_REPLY);
   wr32 (head + 16, flags);
   /* cursorID (8 bytes) and startingFrom stay 0 */
   wr32 (head + 32, 1); /* numberReturned */
   struct iovec iov[2] = {{head, sizeof head}, {(void *) bson_get_data (doc), doc->len}};
   return write_iov (fd, iov, 2);
}

/* ---- messages ---- */

/* -1: malformed, close the connection. */
static int
handle_msg (amongo_conn_arg_t *conn, int32_t request_id, const uint8_t *body, size_t blen, bson_t *reply)
{
   amongo_request_t req;
   memset (&req, 0, sizeof req);
   req.connection_id = conn->id;

   const uint8_t *p = body, *end = body + blen;
   if (blen < 4) {
      return -1;
   }
   uint32_t flags = (uint32_t) rd32 (p);
   p += 4;
   /* Bits 0-15 are "required": an unknown one means we cannot read the message correctly. */
   if (flags & 0xffffu & ~(MSG_CHECKSUM_PRESENT | MSG_MORE_TO_COME)) {
      return -1;
   }
   if (flags & MSG_CHECKSUM_PRESENT) {
      if (end - p < 4) {
         return -1;
      }
      end -= 4; /* the CRC-32C is not verified: loopback only */
   }

   bool have_body = false;
   while (p < end) {
      uint8_t kind = *p++;
      if (end - p < 4) {
         return -1;
      }
      int32_t len = rd32 (p);
      if (len < 5 || len > end - p) {
         return -1;
      }
      if (kind == 0) {
         if (have_body || !bson_init_static (&req.body, p, (size_t) len)) {
            return -1;
         }
         have_body = true;
      } else if (kind == 1) {
         const uint8_t *sec_end = p + len, *q = p + 4;
         const uint8_t *nul = memchr (q, 0, (size_t) (sec_end - q));
         if (!nul || req.nseqs == AMONGO_MAX_SEQS) {
            return -1;
         }
         amongo_seq_t *seq = &req.seqs[req.nseqs++];
         seq->ident = (const char *) q;
         seq->data = nul + 1;
         seq->len = (size_t) (sec_end - seq->data);
         for (q = seq->data; q < sec_end;) {
            int32_t dl;
            if (sec_end - q < 5 || (dl = rd32 (q)) < 5 || dl > sec_end - q || q[dl - 1] != 0) {
               return -1;
            }
            q += dl;
         }
      } else {
         return -1;
      }
      p += len;
   }
   if (!have_body) {
      return -1;
   }

   bson_iter_t it;
   if (bson_iter_init_find (&it, &req.body, "$db") && BSON_ITER_HOLDS_UTF8 (&it)) {
      uint32_t dblen;
      const char *db = bson_iter_utf8 (&it, &dblen);
      if (strlen (db) == dblen) {
         req.db = db;
      }
   }
   amongo_command_run (&req, reply);
   if (flags & MSG_MORE_TO_COME) {
      return 0; /* the client asked for no reply (unacknowledged write) */
   }
   return send_msg_reply (conn->fd, request_id, reply);
}

static int
handle_query (amongo_conn_arg_t *conn, int32_t request_id, const uint8_t *body, size_t blen, bson_t *reply)
{
   amongo_request_t req;
   memset (&req, 0, sizeof req);
   req.connection_id = conn->id;
   req.op_query = true;

   const uint8_t *p = body + 4, *end = body + blen;
   if (blen < 4 + 1 + 8 + 5) {
      return -1;
   }
   const uint8_t *nul = memchr (p, 0, (size_t) (end - p));
   if (!nul || end - (nul + 1) < 8 + 5) {
      return -1;
   }
   const char *ns = (const char *) p;
   size_t nslen = (size_t) (nul - p);
   p = nul + 1 + 8; /* numberToSkip, numberToReturn */
   int32_t len = rd32 (p);
   bson_t query;
   if (len < 5 || len > end - p || !bson_init_static (&query, p, (size_t) len)) {
      return -1;
   }

   char db[AMONGO_MAX_DB + 1];
   if (nslen < 6 || memcmp (ns + nslen - 5, ".$cmd", 5) != 0 || nslen - 5 > AMONGO_MAX_DB) {
      bson_reinit (reply);
      BSON_APPEND_UTF8 (reply, "$err", "benchserver answers only the handshake over OP_QUERY");
      BSON_APPEND_INT32 (reply, "code", AMONGO_ERR_UNSUPPORTED_OP_QUERY);
      return send_op_reply (conn->fd, request_id, REPLY_QUERY_FAILURE, reply);
   }
   memcpy (db, ns, nslen - 5);
   db[nslen - 5] = '\0';
   req.db = db;

   /* Drivers wrap the command as {$query: cmd, $readPreference: ...} when they add a read preference. */
   bson_iter_t it;
   req.body = query;
   if (bson_iter_init (&it, &query) && bson_iter_next (&it) && BSON_ITER_HOLDS_DOCUMENT (&it) &&
       (!strcmp (bson_iter_key (&it), "$query") || !strcmp (bson_iter_key (&it), "query"))) {
      uint32_t qlen;
      const uint8_t *qdata;
      bson_iter_document (&it, &qlen, &qdata);
      if (!bson_init_static (&req.body, qdata, qlen)) {
         return -1;
      }
   }
   amongo_command_run (&req, reply);
   return send_op_reply (conn->fd, request_id, 0, reply);
}

void *
amongo_conn_main (void *arg)
{
   amongo_conn_arg_t *conn = arg;
   uint8_t *buf = NULL;
   size_t cap = 0;
   bson_t *reply = bson_new ();

   for (;;) {
      uint8_t head[HEADER_LEN];
      if (read_full (conn->fd, head, sizeof head) < 0) {
         break;
      }
      int32_t len = rd32 (head), request_id = rd32 (head + 4), opcode = rd32 (head + 12);
      if (len < HEADER_LEN + 5 || len > AMONGO_MAX_MESSAGE_SIZE) {
         break;
      }
      size_t blen = (size_t) len - HEADER_LEN;
      if (blen > cap) {
         free (buf);
         cap = blen < 4096 ? 4096 : blen;
         if (!(buf = malloc (cap))) {
            break;
         }
      }
      if (read_full (conn->fd, buf, blen) < 0) {
         break;
      }

      bson_reinit (reply);
      int rc;
      if (opcode == OPCODE_MSG) {
         rc = handle_msg (conn, request_id, buf, blen, reply);
      } else if (opcode == OPCODE_QUERY) {
         rc = handle_query (conn, request_id, buf, blen, reply);
      } else {
         rc = -1; /* OP_COMPRESSED is never negotiated; the other legacy opcodes are gone from MongoDB */
      }
      if (rc < 0) {
         break;
      }
      if (reply->len > KEEP_BUFFER) {
         bson_destroy (reply);
         reply = bson_new ();
      }
      if (cap > KEEP_BUFFER) {
         free (buf);
         buf = NULL;
         cap = 0;
      }
   }
   bson_destroy (reply);
   free (buf);
   close (conn->fd);
   free (conn);
   return NULL;
}

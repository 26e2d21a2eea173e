/* benchserver --port N: listens on 127.0.0.1 (port 0 picks a free one), prints "ready <port>" once
 * listening, serves one thread per connection until SIGTERM or SIGINT, then exits 0. The signals are
 * blocked in every thread and taken synchronously by the main thread, so no handler runs mid-request. */
#define _GNU_SOURCE /* accept4 */
#include "benchserver.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONN_STACK (256 * 1024) /* small stacks: a thousand connections must fit comfortably */

static void
usage (void)
{
   fprintf (stderr, "usage: benchserver [--port N]\n");
   exit (2);
}

static void
pause_briefly (void)
{
   struct timespec ts = {0, 10 * 1000 * 1000};
   nanosleep (&ts, NULL);
}

static void *
accept_main (void *arg)
{
   int lfd = *(int *) arg;
   pthread_attr_t attr;
   uint32_t accepted = 0;

   if (pthread_attr_init (&attr) != 0 || pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED) != 0 ||
       pthread_attr_setstacksize (&attr, CONN_STACK) != 0) {
      fprintf (stderr, "benchserver: cannot set up thread attributes\n");
      exit (1);
   }
   for (;;) {
      int fd = accept4 (lfd, NULL, NULL, SOCK_CLOEXEC);
      if (fd < 0) {
         if (errno != EINTR && errno != ECONNABORTED) {
            /* EMFILE and friends: wait for connections to close rather than spin. */
            pause_briefly ();
         }
         continue;
      }
      int one = 1;
      setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      amongo_conn_arg_t *conn = malloc (sizeof *conn);
      pthread_t tid;
      if (!conn) {
         close (fd);
         continue;
      }
      conn->fd = fd;
      conn->id = (int32_t) (++accepted & 0x7fffffff); /* connectionId: positive, wraps harmlessly */
      if (pthread_create (&tid, &attr, amongo_conn_main, conn) != 0) {
         close (fd);
         free (conn);
         pause_briefly ();
      }
   }
   return NULL;
}

int
main (int argc, char **argv)
{
   long port = 0;
   for (int i = 1; i < argc; i++) {
      if (!strcmp (argv[i], "--port") && i + 1 < argc) {
         char *end;
         errno = 0;
         port = strtol (argv[++i], &end, 10);
         if (errno || *end || port < 0 || port > 65535) {
            usage ();
         }
      } else {
         usage ();
      }
   }

   /* Each connection holds a descriptor: allow as many as the hard limit does. */
   struct rlimit rl;
   if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit (RLIMIT_NOFILE, &rl);
   }

   sigset_t stop;
   sigemptyset (&stop);
   sigaddset (&stop, SIGTERM);
   sigaddset (&stop, SIGINT);
   if (pthread_sigmask (SIG_BLOCK, &stop, NULL) != 0) {
      fprintf (stderr, "benchserver: cannot block signals\n");
      return 1;
   }
   signal (SIGPIPE, SIG_IGN);
   if (amongo_store_init () != 0) {
      fprintf (stderr, "benchserver: cannot initialise the store\n");
      return 1;
   }

   int lfd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
   int one = 1;
   struct sockaddr_in addr;
   socklen_t alen = sizeof addr;
   memset (&addr, 0, sizeof addr);
   addr.sin_family = AF_INET;
   addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
   addr.sin_port = htons ((uint16_t) port);
   if (lfd < 0 || setsockopt (lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
       bind (lfd, (struct sockaddr *) &addr, sizeof addr) < 0 || listen (lfd, SOMAXCONN) < 0 ||
       getsockname (lfd, (struct sockaddr *) &addr, &alen) < 0) {
      fprintf (stderr, "benchserver: cannot listen on 127.0.0.1:%ld: %s\n", port, strerror (errno));
      return 1;
   }

   pthread_t acceptor;
   if (pthread_create (&acceptor, NULL, accept_main, &lfd) != 0) {
      fprintf (stderr, "benchserver: cannot start the accept thread\n");
      return 1;
   }
   printf ("ready %d\n", ntohs (addr.sin_port));
   fflush (stdout);

   int sig = 0;
   while (sigwait (&stop, &sig) != 0) {
   }
   /* Connection threads may be mid-request: leave without running exit handlers under them. */
   close (lfd);
   fflush (NULL);
   _exit (0);
}

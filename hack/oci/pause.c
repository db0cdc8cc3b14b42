/* The pod sandbox's first process: holds the pod's namespaces open, reaps orphaned children
 * (it is PID 1 of the pod when the PID namespace is shared) and exits on SIGINT/SIGTERM.
 * Built with `gcc -static` by hack/images.sh into the registry.k8s.io/pause image. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_terminate(int sig) {
  (void)sig;
  _exit(0);
}

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    puts("pause (openbao-operator hermetic node)");
    return 0;
  }
  if (getpid() != 1) {
    fputs("pause: warning: not PID 1, orphans will not be reaped here\n", stderr);
  }
  struct sigaction term = {.sa_handler = on_terminate};
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &term, NULL) < 0 || sigaction(SIGTERM, &term, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0) {
    perror("pause: sigaction");
    return 1;
  }
  for (;;) {
    pause();
  }
}

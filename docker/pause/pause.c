/* The pod's placeholder process (the pre-puller DaemonSets' "pause" container): it holds the pod
 * open and does nothing else.  As PID 1 of its container it must reap children re-parented to it
 * and end on SIGTERM/SIGINT (a container's PID 1 gets no default signal handlers). */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t done;

static void on_stop(int sig) { (void)sig; done = 1; }

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    (void)argv;
    if (argc > 1) {
        return 2; /* no arguments: nothing to configure */
    }
    struct sigaction stop = {.sa_handler = on_stop};
    struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    sigemptyset(&stop.sa_mask);
    sigemptyset(&child.sa_mask);
    if (sigaction(SIGTERM, &stop, NULL) || sigaction(SIGINT, &stop, NULL) ||
        sigaction(SIGCHLD, &child, NULL)) {
        return 1;
    }
    while (!done) {
        pause();
    }
    return 0;
}

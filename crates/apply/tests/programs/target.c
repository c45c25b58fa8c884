/* A multi-threaded program that calls compute() in a loop on every worker thread and prints,
 * every 20 ms, how many results were the baseline's (2x+1), the fixed code's (3x) or neither.
 * argv[1] = worker threads; argv[2] = "spin" adds a thread that never leaves spin(). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int compute(int x);
int helper(int x);

struct counters {
    volatile unsigned long calls, old_results, new_results, wrong;
} __attribute__((aligned(64)));

static struct counters counters[64];
static volatile unsigned long spins;

__attribute__((noipa)) void spin(void) {
    for (;;) {
        spins = spins + 1;
    }
}

static void *spin_thread(void *arg) {
    (void)arg;
    spin();
    return NULL;
}

static void *worker(void *arg) {
    struct counters *c = &counters[(unsigned long)arg];
    unsigned long i = (unsigned long)arg * 1000003;
    volatile int other_work = 0;
    for (;;) {
        /* Some work outside compute(), as a real caller has: a thread is inside compute() for
         * a fraction of its time, not nearly always. */
        for (int k = 0; k < 16; k++)
            other_work += k;
        int x = (int)(i++ & 0xffff) + 2;
        int r = compute(x);
        if (r == 2 * x + 1)
            c->old_results++;
        else if (r == 3 * x)
            c->new_results++;
        else
            c->wrong++;
        c->calls++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    if (threads < 1 || threads > 64)
        threads = 4;
    pthread_t t;
    for (long i = 0; i < threads; i++)
        pthread_create(&t, NULL, worker, (void *)i);
    if (argc > 2 && strcmp(argv[2], "spin") == 0)
        pthread_create(&t, NULL, spin_thread, NULL);
    for (;;) {
        usleep(20000);
        unsigned long calls = 0, old_results = 0, new_results = 0, wrong = 0;
        for (int i = 0; i < threads; i++) {
            calls += counters[i].calls;
            old_results += counters[i].old_results;
            new_results += counters[i].new_results;
            wrong += counters[i].wrong;
        }
        printf("calls=%lu old=%lu new=%lu wrong=%lu helper=%d\n", calls, old_results, new_results,
               wrong, helper(1));
        fflush(stdout);
    }
}

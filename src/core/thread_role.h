/* Which thread is running, so that ownership written in the headers is also checked (Redis's
 * iothread.c asserts the owning thread; twemproxy's ASSERT is compiled out of release builds).
 *
 * Each thread's main sets its role once; a function that belongs to one thread asserts it at its
 * entry. ASSERT_THREAD is a plain assert(): Release builds (-DNDEBUG, CMAKE_BUILD_TYPE=Release)
 * compile it out, so the hot path pays nothing there. Any thread. */
#ifndef PR_CORE_THREAD_ROLE_H
#define PR_CORE_THREAD_ROLE_H

#include <assert.h>
#include <stdbool.h>

enum thread_role {
    ROLE_NONE,     /* not set: the main thread before the acceptor runs, test programs */
    ROLE_ACCEPTOR, /* the main thread from acceptor_run on (it stays so for acceptor_destroy) */
    ROLE_SHARD,    /* a shard thread, from shard_main */
    ROLE_METRICS,  /* the metrics HTTP thread, from metrics_main */
    ROLE_REGISTRAR, /* the ZooKeeper registrar thread, from registrar_main */
};

/* The calling thread is `role`, working for `owner`: its struct acceptor or struct shard, NULL
 * for a role with a single thread. */
void thread_role_set(enum thread_role role, const void *owner);

/* The calling thread has `role` and, unless owner is NULL, works for that owner. */
bool thread_role_is(enum thread_role role, const void *owner);

/* "Only a thread of this role calls this." */
#define ASSERT_THREAD(role) assert(thread_role_is((role), NULL))
/* "Only the thread of this owner calls this": e.g. this shard's thread, not any shard's. */
#define ASSERT_THREAD_OF(role, owner) assert(thread_role_is((role), (owner)))

#endif

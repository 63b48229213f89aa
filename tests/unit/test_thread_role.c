/* core/thread_role: the per-thread role that debug builds assert at thread-owned entry points. */
#include <criterion/criterion.h>

#include <pthread.h>
#include <signal.h>
#include <stdint.h>

#include "core/thread_role.h"

static int shard_a, shard_b; /* stand-ins for two shards: only their addresses matter */

Test(thread_role, unset_until_a_thread_sets_it)
{
    cr_assert(thread_role_is(ROLE_NONE, NULL));
    cr_assert_not(thread_role_is(ROLE_ACCEPTOR, NULL));
    cr_assert_not(thread_role_is(ROLE_SHARD, NULL));
}

Test(thread_role, owner_tells_one_shard_from_another)
{
    thread_role_set(ROLE_SHARD, &shard_a);
    cr_assert(thread_role_is(ROLE_SHARD, NULL), "any shard");
    cr_assert(thread_role_is(ROLE_SHARD, &shard_a), "this shard");
    cr_assert_not(thread_role_is(ROLE_SHARD, &shard_b), "another shard's thread");
    cr_assert_not(thread_role_is(ROLE_ACCEPTOR, NULL));
    cr_assert_not(thread_role_is(ROLE_ACCEPTOR, &shard_a), "same owner, other role");
}

static void *as_shard_b(void *arg)
{
    (void)arg;
    thread_role_set(ROLE_SHARD, &shard_b);
    return (void *)(uintptr_t)thread_role_is(ROLE_SHARD, &shard_b);
}

Test(thread_role, is_per_thread)
{
    thread_role_set(ROLE_ACCEPTOR, NULL);
    pthread_t t;
    void *seen = NULL;
    cr_assert_eq(pthread_create(&t, NULL, as_shard_b, NULL), 0);
    cr_assert_eq(pthread_join(t, &seen), 0);
    cr_assert(seen != NULL, "the other thread sees its own role");
    cr_assert(thread_role_is(ROLE_ACCEPTOR, NULL), "this thread's role is untouched");
    cr_assert_not(thread_role_is(ROLE_SHARD, NULL));
}

#ifndef NDEBUG
/* Debug builds: the wrong thread aborts. (Release builds compile the asserts out.) */
Test(thread_role, assert_aborts_on_another_shards_thread, .signal = SIGABRT)
{
    thread_role_set(ROLE_SHARD, &shard_a);
    ASSERT_THREAD_OF(ROLE_SHARD, &shard_b);
}

Test(thread_role, assert_aborts_on_unset_thread, .signal = SIGABRT)
{
    ASSERT_THREAD(ROLE_ACCEPTOR);
}

Test(thread_role, assert_passes_on_the_owner)
{
    thread_role_set(ROLE_SHARD, &shard_a);
    ASSERT_THREAD_OF(ROLE_SHARD, &shard_a);
    ASSERT_THREAD(ROLE_SHARD);
}
#endif

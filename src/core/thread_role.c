/* The calling thread's role: thread-local, set once by each thread's main. */
#include "core/thread_role.h"

#include <stddef.h>

static _Thread_local enum thread_role my_role = ROLE_NONE;
static _Thread_local const void *my_owner = NULL;

void thread_role_set(enum thread_role role, const void *owner)
{
    my_role = role;
    my_owner = owner;
}

bool thread_role_is(enum thread_role role, const void *owner)
{
    return my_role == role && (owner == NULL || my_owner == owner);
}

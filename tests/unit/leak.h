/* expect_no_leaks(): fail the current test if memory it allocated is unreachable.
 *
 * Criterion ignores what LeakSanitizer prints when a test's process exits, so a test that
 * guards a free (window_destroy, frame_request_done, request_reset, ...) asks LSan itself, at the
 * end of its body. A no-op in builds without AddressSanitizer. */
#ifndef PR_TESTS_LEAK_H
#define PR_TESTS_LEAK_H

#include <criterion/criterion.h>

#if defined(__SANITIZE_ADDRESS__)
#define PR_TESTS_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PR_TESTS_LSAN 1
#endif
#endif

#ifdef PR_TESTS_LSAN
#include <sanitizer/lsan_interface.h>
#define expect_no_leaks()                                                                                    \
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked: see the LeakSanitizer report above")
#else
#define expect_no_leaks() ((void)0)
#endif

#endif

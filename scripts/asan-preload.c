/*
 * asan-preload.c
 *	  Preloaded beside AddressSanitizer's runtime into Debian's postgres, so
 *	  that the runtime can start there (scripts/check-asan.sh).
 *
 * The runtime initialises itself at the first malloc.  In postgres that
 * malloc comes from a library constructor (libgpg-error's) inside
 * bindtextdomain(), which holds glibc's gettext lock (_nl_state_lock) as
 * a writer.  The runtime's start-up looks up the optional symbol
 * swift_demangle with dlsym(); the lookup fails, dlerror() translates its
 * message with dcgettext(), which takes the same lock as a reader: the
 * lock's reader count underflows, and the server's own bindtextdomain()
 * call then waits on it for ever.  With the symbol defined the lookup
 * succeeds, dlerror() has nothing to translate, and the lock is left
 * alone.  Returning NULL means "not a Swift name": symbols are printed as
 * they are.
 */
#include <stddef.h>
#include <stdint.h>

extern char *swift_demangle(const char *mangled, size_t mangled_len, char *out,
							size_t *out_len, uint32_t flags);

char *
swift_demangle(const char *mangled, size_t mangled_len, char *out, size_t *out_len,
			   uint32_t flags)
{
	(void) mangled;
	(void) mangled_len;
	(void) out;
	(void) out_len;
	(void) flags;
	return NULL;
}

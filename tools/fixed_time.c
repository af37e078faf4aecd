/* A diagnostic shim for tools/callgrind_pair.lua, never part of heymarket:
 * LD_PRELOADed, it makes time() return $HEYMARKET_FIXED_TIME (default 1).
 *
 * Lua 5.4 seeds its string hashes from time() and a few addresses. Under
 * valgrind the addresses are the same in every run, so with time() fixed
 * two runs of one program hash every key alike, lay out every table alike
 * and execute the same instructions; with time() free, the collisions in
 * lua-cjson's tables move the count of a 10,000-inbox call by about 1%
 * from one process to the next. Two contestants given the same value
 * decode into tables laid out alike, so their difference is their own work.
 */
#include <stdlib.h>
#include <time.h>

time_t time(time_t *out)
{
    const char *s = getenv("HEYMARKET_FIXED_TIME");
    time_t v = (time_t)(s != NULL ? atol(s) : 1);
    if (out != NULL)
        *out = v;
    return v;
}

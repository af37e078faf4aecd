/* JSON through a private lua-cjson instance (or Neovim's vim.json), then
 * normalised the way the contract promises: integers on 5.3+, nulls dropped
 * from objects (or heymarket.null), heymarket.null inside arrays. */
#include "hm.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 1000 /* cjson's own default limit; we recurse no deeper */

/* lua_pcall for the setup steps: a memory error (or an error while handling
 * one) is raised on, never taken for "this decoder is missing". */
static int setup_pcall(lua_State *L, int nargs, int nresults)
{
    int status = lua_pcall(L, nargs, nresults, 0);
    if (status != 0 && status != LUA_ERRRUN)
        lua_error(L);
    return status;
}

/* What the state's decoder does by itself, found out once at load (state
 * slot JFLAGS): the walk after each decode does only what is left. */
#define JFLAGS "decoder_flags"
#define JF_FLOATS 1      /* whole numbers come back as floats on 5.3+ */
#define JF_FOREIGN_NULL 2 /* its null is not heymarket.null (lightuserdata NULL) */

/* Decode "[1]" and look at the number and at the decoder's null; store the
 * flags in the state (at index state), with the decoder and its null set. */
static void probe_decoder(lua_State *L, int state)
{
    int flags = 0, top = lua_gettop(L);
    lua_getfield(L, state, HM_STATE_JNULL);
    if (lua_type(L, -1) != LUA_TLIGHTUSERDATA || lua_touserdata(L, -1) != NULL)
        flags |= JF_FOREIGN_NULL;
#if HM_HAS_INTEGERS
    lua_getfield(L, state, HM_STATE_DECODE);
    lua_pushliteral(L, "[1]");
    if (setup_pcall(L, 1, 1) != 0 || !lua_istable(L, -1))
        flags |= JF_FLOATS; /* cannot tell: walk as if it gave floats */
    else {
        lua_rawgeti(L, -1, 1);
        if (!lua_isinteger(L, -1))
            flags |= JF_FLOATS;
    }
#endif
    lua_settop(L, top);
    lua_pushinteger(L, flags);
    lua_setfield(L, state, JFLAGS);
}

/* If the table at the top has a decode function, store it as the state's
 * decoder and return 1; the stack is left as it was either way. */
static int take_decoder(lua_State *L, int state)
{
    int found;
    lua_getfield(L, -1, "decode");
    found = lua_isfunction(L, -1);
    if (found) {
        lua_setfield(L, state, HM_STATE_DECODE);
        probe_decoder(L, state);
    } else
        lua_pop(L, 1);
    return found;
}

/* With the state table at the top: find a decoder and store it there.
 * Returns 0 when neither lua-cjson nor vim.json is available. */
int hm_json_setup(lua_State *L)
{
    int state = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson");
    if (setup_pcall(L, 1, 1) == 0 && lua_istable(L, -1)) {
        int cjson = lua_gettop(L);
        lua_getfield(L, cjson, "null");
        lua_setfield(L, state, HM_STATE_JNULL);
        /* A private instance: the host's shared cjson settings stay untouched. */
        lua_getfield(L, cjson, "new");
        if (setup_pcall(L, 0, 1) == 0 && lua_istable(L, -1)) {
            lua_getfield(L, -1, "decode_invalid_numbers");
            if (lua_isfunction(L, -1)) {
                lua_pushboolean(L, 0);
                if (setup_pcall(L, 1, 0) != 0)
                    lua_pop(L, 1);
            } else {
                lua_pop(L, 1);
            }
            if (take_decoder(L, state)) {
                lua_settop(L, state);
                return 1;
            }
        }
    }
    lua_settop(L, state);
    /* Inside Neovim cjson may be missing from package.cpath; vim.json is not. */
    lua_getglobal(L, "vim");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "NIL");
        lua_setfield(L, state, HM_STATE_JNULL);
        lua_getfield(L, -1, "json");
        if (lua_istable(L, -1) && take_decoder(L, state)) {
            lua_settop(L, state);
            return 1;
        }
    }
    lua_settop(L, state);
    return 0;
}

static const char *shape_name(char first)
{
    switch (first) {
    case '{': return "an object";
    case '[': return "an array";
    case '"': return "a string";
    case 't': case 'f': return "a boolean";
    case 'n': return "null";
    default: return "a number";
    }
}

/* What the scans need to know of a byte: the kind of value it starts (a
 * valid value starts with one of `"tfn{[-0123456789`: strings and booleans
 * need no fixing), whether it is JSON space, and whether it can be part of
 * a number or a literal. */
#define K_NUMBER 1
#define K_NULL 2
#define K_TABLE 4
#define K_SPACE 8
#define K_TOKEN 16

static const unsigned char byte_kind[256] = {
    [' '] = K_SPACE, ['\t'] = K_SPACE, ['\r'] = K_SPACE, ['\n'] = K_SPACE, ['a'] = K_TOKEN,
    ['b'] = K_TOKEN, ['c'] = K_TOKEN, ['d'] = K_TOKEN, ['e'] = K_TOKEN, ['f'] = K_TOKEN,
    ['g'] = K_TOKEN, ['h'] = K_TOKEN, ['i'] = K_TOKEN, ['j'] = K_TOKEN, ['k'] = K_TOKEN,
    ['l'] = K_TOKEN, ['m'] = K_TOKEN, ['n'] = K_NULL | K_TOKEN, ['o'] = K_TOKEN,
    ['p'] = K_TOKEN, ['q'] = K_TOKEN, ['r'] = K_TOKEN, ['s'] = K_TOKEN, ['t'] = K_TOKEN,
    ['u'] = K_TOKEN, ['v'] = K_TOKEN, ['w'] = K_TOKEN, ['x'] = K_TOKEN, ['y'] = K_TOKEN,
    ['z'] = K_TOKEN, ['0'] = K_NUMBER | K_TOKEN, ['1'] = K_NUMBER | K_TOKEN,
    ['2'] = K_NUMBER | K_TOKEN, ['3'] = K_NUMBER | K_TOKEN, ['4'] = K_NUMBER | K_TOKEN,
    ['5'] = K_NUMBER | K_TOKEN, ['6'] = K_NUMBER | K_TOKEN, ['7'] = K_NUMBER | K_TOKEN,
    ['8'] = K_NUMBER | K_TOKEN, ['9'] = K_NUMBER | K_TOKEN, ['-'] = K_NUMBER | K_TOKEN,
    ['+'] = K_TOKEN, ['.'] = K_TOKEN, ['E'] = K_TOKEN, ['{'] = K_TABLE, ['['] = K_TABLE,
};

#define KIND(c) byte_kind[(unsigned char)(c)]

#if HM_HAS_INTEGERS
/* cjson 2.1.0 decodes every number as a float; a whole one within
 * lua_Integer's range becomes an integer. */
static int integral(lua_State *L, int idx, lua_Integer *out)
{
    lua_Number n;
    if (lua_type(L, idx) != LUA_TNUMBER || lua_isinteger(L, idx))
        return 0;
    n = lua_tonumber(L, idx);
    return n == floor(n) && lua_numbertointeger(n, out);
}
#endif

/* What the walk has to do, for this decoder and this body. */
typedef struct walk {
    int jnull;       /* stack index of the decoder's null */
    int jnull_type;  /* its type: no other type needs comparing */
    const void *jnull_ptr; /* its address, when it is a light userdata */
    int ints;        /* whole floats become integers */
    int object_null; /* nulls in objects: dropped, or replaced (keep_null) */
    int keep_null;
    int array_null;  /* nulls in arrays: replaced by heymarket.null */
    int keys, nkeys; /* nkeys >= 0: objects are visited only under the nkeys
                        key strings at stack index keys.. (see collect_keys);
                        < 0: every member, with lua_next */
} walk;

/* lua_rawget and lua_rawgeti, giving the type of the value they push (5.3
 * made them return it). */
#if LUA_VERSION_NUM >= 503
#define hm_rawget_type(L, t) lua_rawget((L), (t))
#define hm_rawgeti_type(L, t, i) lua_rawgeti((L), (t), (i))
#else
static int hm_rawget_type(lua_State *L, int t)
{
    lua_rawget(L, t);
    return lua_type(L, -1);
}
static int hm_rawgeti_type(lua_State *L, int t, lua_Integer i)
{
    lua_rawgeti(L, t, (int)i);
    return lua_type(L, -1);
}
#endif

static int normalise(lua_State *L, const walk *w, int depth);

#if HM_HAS_INTEGERS
/* The number at the top, stored under the key at key_idx (or, when key_idx
 * is 0, index i) of the table at t: a float with an exact integer value in
 * range becomes that integer. */
static void fix_number(lua_State *L, int t, int key_idx, lua_Integer i)
{
    lua_Number n;
    lua_Integer v;
    if (lua_isinteger(L, -1)) /* a decoder that gives some integers: 2^53 + 1 stays */
        return;
    n = lua_tonumber(L, -1);
    if (!lua_numbertointeger(n, &v) || (lua_Number)v != n)
        return;
    if (key_idx != 0) {
        lua_pushvalue(L, key_idx);
        lua_pushinteger(L, v);
        lua_rawset(L, t);
    } else {
        lua_pushinteger(L, v);
        lua_rawseti(L, t, i);
    }
}
#endif

/* The value at the top, of type type, stored under the key at key_idx (or,
 * when key_idx is 0, index i) of the table at t: recurse into a table, or
 * fix a float or a null. Leaves it on the stack. Returns 0 when nested too
 * deeply. */
static int fix_value(lua_State *L, const walk *w, int t, int type, int key_idx, lua_Integer i,
                     int depth)
{
    if (type == LUA_TTABLE)
        return normalise(L, w, depth + 1);
#if HM_HAS_INTEGERS
    if (type == LUA_TNUMBER) {
        if (w->ints)
            fix_number(L, t, key_idx, i);
        return 1;
    }
#endif
    if (type == w->jnull_type && (key_idx != 0 ? w->object_null : w->array_null)
        && (type == LUA_TLIGHTUSERDATA ? lua_touserdata(L, -1) == w->jnull_ptr
                                       : lua_rawequal(L, -1, w->jnull))) {
        if (key_idx != 0) {
            lua_pushvalue(L, key_idx);
            if (w->keep_null)
                lua_pushlightuserdata(L, NULL); /* heymarket.null */
            else
                lua_pushnil(L);
            lua_rawset(L, t);
        } else {
            lua_pushlightuserdata(L, NULL);
            lua_rawseti(L, t, (int)i);
        }
    }
    return 1;
}

/* Numbers are the walk's most common case: fixed here, the rest in
 * fix_value. */
#if HM_HAS_INTEGERS
#define FIX_VALUE(L, w, t, type, key_idx, i, depth)                                 \
    ((type) == LUA_TNUMBER ? ((w)->ints ? fix_number((L), (t), (key_idx), (i)) : (void)0), 1 \
                           : fix_value((L), (w), (t), (type), (key_idx), (i), (depth)))
#else
#define FIX_VALUE fix_value
#endif

/* Values the walk leaves on the stack before one lua_settop takes them all
 * (a call saved per value); only near the top, so that 1000 levels stay
 * within the 8000 slots Lua 5.1 lets a C function have. */
#define HELD_MAX 16
#define HELD_DEPTH 16

/* Normalise the table at the top of the stack in place. A decoded array
 * (a table with a length: JSON object keys are always strings) is walked by
 * index; an object under the keys collect_keys found (when it did), else
 * with lua_next, which allows assigning or clearing existing fields during
 * the traversal. Returns 0, with the table still at the top, when it is
 * nested too deeply (vim.json has no depth limit of its own). */
static int normalise(lua_State *L, const walk *w, int depth)
{
    int t = lua_gettop(L), type, held = 0, hold = depth <= HELD_DEPTH ? HELD_MAX : 1;
    size_t n;
    if (depth > MAX_DEPTH)
        return 0;
    /* held values, and 4 more a level: only memory can lack (the first
     * HELD_DEPTH levels' are reserved at once, before the walk) */
    if (depth > HELD_DEPTH && !lua_checkstack(L, hold + 4))
        hm_raise_memory(L);
    n = hm_rawlen(L, t);
    if (n > 0) {
        size_t i;
        if (n > (size_t)INT_MAX)
            n = (size_t)INT_MAX;
        for (i = 1; i <= n; i++) {
            type = hm_rawgeti_type(L, t, (lua_Integer)i);
            if (!FIX_VALUE(L, w, t, type, 0, (lua_Integer)i, depth))
                goto too_deep;
            if (++held == hold) {
                lua_settop(L, t);
                held = 0;
            }
        }
    } else if (w->nkeys >= 0) {
        int k;
        for (k = w->keys; k < w->keys + w->nkeys; k++) {
            lua_pushvalue(L, k);
            type = hm_rawget_type(L, t);
            if (type != LUA_TNIL && !FIX_VALUE(L, w, t, type, k, 0, depth))
                goto too_deep;
            if (++held == hold) {
                lua_settop(L, t);
                held = 0;
            }
        }
    } else {
        lua_pushnil(L);
        while (lua_next(L, t) != 0) {
            if (!fix_value(L, w, t, lua_type(L, -1), t + 1, 0, depth))
                goto too_deep;
            lua_pop(L, 1);
        }
        return 1;
    }
    if (held > 0)
        lua_settop(L, t);
    return 1;
too_deep:
    lua_settop(L, t);
    return 0;
}

/* Where the body first holds the word null (in a string too: then the walk
 * runs for nothing, which is only slower), or n when nowhere. */
static size_t find_null(const char *p, size_t n)
{
    const char *q = p, *end = p + n;
    while ((size_t)(end - q) >= 4 && (q = memchr(q, 'n', (size_t)(end - q) - 3)) != NULL) {
        if (q[1] == 'u' && q[2] == 'l' && q[3] == 'l')
            return (size_t)(q - p);
        q++;
    }
    return n;
}

/* ---- null members blanked before decoding ------------------------------- */

/* Where a decoder's null is heymarket.null already (lua-cjson) and Lua has no
 * integers to fix, the only work left after decoding is dropping the nulls of
 * objects: a walk over the decoded values. Blanking each `"key": null` member
 * (and one comma joining it to a neighbour) with spaces in the body instead
 * costs one pass over the text, after which no walk is needed, and keeps
 * every offset, so the decoder's error messages still point at the right
 * character.
 *
 * The pass looks at few bytes: it finds, 64 bytes at a time, the brackets,
 * colons and n's outside strings (see load_block), and checks the text
 * around each null by hand (null_member). Blanking must never make an
 * invalid body valid, so a member is blanked only where putting it back
 * into the blanked text would keep a valid text valid: its key is plain
 * (plain_key_start), its value is the literal null, and it sits in an object
 * (the innermost open bracket is a '{'), either first (after the '{', and
 * before the '}' or a ',' and the next key, the comma going with it) or
 * after a ',' that follows a value (the comma going with it, and before a
 * ',' or the '}'). A member right after a blanked first member and its
 * comma is first too. Outside the blanked members the blanked text has
 * the body's quotes, backslashes and brackets (a member takes its key's two
 * unescaped quotes with it), so where it is valid, the body's strings and
 * nesting were read right. Anything else makes the pass stop, returning 0:
 * the objects closed by then stay blanked, and the walk drops what is
 * left. It returns 1 when every null member of every object was blanked. */

static int is_json_space(char c)
{
    return KIND(c) == K_SPACE;
}

static size_t skip_space(const char *p, size_t i, size_t n)
{
    while (i < n && is_json_space(p[i]))
        i++;
    return i;
}

#define NOWHERE ((size_t)-1)

/* The last byte before i that is not JSON space, or NOWHERE. */
static inline size_t space_before(const char *p, size_t i)
{
    while (i > 0 && is_json_space(p[i - 1]))
        i--;
    return i > 0 ? i - 1 : NOWHERE;
}

/* Is the quote at q escaped: an odd run of backslashes before it? */
static inline int escaped(const char *p, const char *q)
{
    const char *b = q;
    while (b > p && b[-1] == '\\')
        b--;
    return ((q - b) & 1) != 0;
}

/* The index just past the string whose opening quote is at i, or 0. */
static inline size_t string_end(const char *p, size_t i, size_t n)
{
    for (i++;; i++) {
        const char *q = i < n ? memchr(p + i, '"', n - i) : NULL;
        if (q == NULL)
            return 0;
        i = (size_t)(q - p);
        if (!escaped(p, q)) /* the run of backslashes stops at the opening quote */
            return i + 1;
    }
}

/* Bytes of a number or a literal (true, false, null), and the bytes that
 * could continue one: what the decoder will reject is its business. */
static int is_token_byte(char c)
{
    return (KIND(c) & K_TOKEN) != 0;
}

/* A key with nothing lua-cjson could reject: no escapes (it checks them)
 * and no control bytes (it takes all but NUL, which ends its input; the
 * rule is kept simple). Members under other keys are left to the walk. */
static int plain_key(const char *p, size_t from, size_t to)
{
    for (; from < to; from++)
        if ((unsigned char)p[from] < 0x20 || p[from] == '\\')
            return 0;
    return 1;
}

/* The opening quote of the plain key whose closing quote is at q: the
 * first quote before it, with no backslash or control byte in between; or
 * NOWHERE. Eight bytes at a time, with the usual bit tricks: x - 0x01..01
 * sets a byte's top bit where the byte was 0 (or borrowed from), and
 * & ~x & 0x80..80 keeps only bytes that were below 0x80, so a word holds
 * a byte below c exactly when (x - c * 0x01..01) & ~x & 0x80..80 != 0. */
static size_t plain_key_start(const char *p, size_t q)
{
    const uint64_t ones = 0x0101010101010101u, tops = 0x8080808080808080u;
    size_t o = q;
    while (o >= 8) {
        uint64_t x, quote, backslash;
        memcpy(&x, p + o - 8, 8);
        quote = x ^ (ones * '"');
        backslash = x ^ (ones * '\\');
        if ((((quote - ones) & ~quote) | ((backslash - ones) & ~backslash)
             | ((x - ones * 0x20) & ~x)) & tops)
            break; /* one of them is in these 8: byte by byte */
        o -= 8;
    }
    for (; o > 0 && p[o - 1] != '"'; o--)
        if ((unsigned char)p[o - 1] < 0x20 || p[o - 1] == '\\')
            return NOWHERE;
    return o > 0 ? o - 1 : NOWHERE;
}

/* -- the bytes the pass looks at -- */

/* A quote is escaped when an odd run of backslashes comes before it; each
 * unescaped quote opens or closes a string, so the bytes inside strings are
 * those after an odd number of unescaped quotes: a running XOR over a mask
 * of the quotes, carried from block to block. */
typedef struct carry {
    uint64_t inside;      /* all ones when the last block ended inside a string */
    int escape;           /* it ended with a backslash escaping the next byte */
    size_t backslash_end; /* just past the last unescaped backslash seen, 0: none */
} carry;

#if defined(__SSE2__) && !defined(HM_PORTABLE_SCAN) /* make fuzz builds both */
#include <emmintrin.h>

/* The masks of the 64 bytes at b (a bit a byte): quotes, and the bytes
 * sought: brackets, colons and n's. Returns whether b holds a backslash. */
static int classify(const unsigned char *b, uint64_t *quote, uint64_t *sought)
{
    const __m128i q = _mm_set1_epi8('"'), bs = _mm_set1_epi8('\\'), fold = _mm_set1_epi8(0x20),
                  open = _mm_set1_epi8('{'), close = _mm_set1_epi8('}'),
                  colon = _mm_set1_epi8(':'), en = _mm_set1_epi8('n');
    __m128i backslash = _mm_setzero_si128();
    uint64_t mq = 0, ms = 0;
    int k;
    for (k = 0; k < 64; k += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(b + k));
        __m128i f = _mm_or_si128(v, fold); /* '[' and ']' become '{' and '}' */
        __m128i s = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(f, open), _mm_cmpeq_epi8(f, close)),
                                 _mm_or_si128(_mm_cmpeq_epi8(v, colon), _mm_cmpeq_epi8(v, en)));
        mq |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, q)) << k;
        ms |= (uint64_t)(unsigned)_mm_movemask_epi8(s) << k;
        backslash = _mm_or_si128(backslash, _mm_cmpeq_epi8(v, bs));
    }
    *quote = mq;
    *sought = ms;
    return _mm_movemask_epi8(backslash) != 0;
}
#else
static int classify(const unsigned char *b, uint64_t *quote, uint64_t *sought)
{
    uint64_t mq = 0, ms = 0;
    int k, backslash = 0;
    for (k = 0; k < 64; k++) {
        uint64_t bit = (uint64_t)1 << k;
        switch (b[k]) {
        case '"': mq |= bit; break;
        case '\\': backslash = 1; break;
        case '{': case '}': case '[': case ']': case ':': case 'n': ms |= bit; break;
        default: break;
        }
    }
    *quote = mq;
    *sought = ms;
    return backslash;
}
#endif

/* The bits of x, each XORed with all those below it. */
static inline uint64_t running_xor(uint64_t x)
{
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    return x;
}

/* The sought bytes outside strings in the block of (at most) 64 bytes at
 * p + base, after the blocks before it (cs). */
static uint64_t load_block(carry *cs, const char *p, size_t n, size_t base)
{
    unsigned char tail[64];
    const unsigned char *b = (const unsigned char *)p + base;
    uint64_t quote, sought, escaped_bits = 0, inside;
    if (n - base < 64) { /* the last, short block: padded with spaces */
        memset(tail, ' ', sizeof tail);
        memcpy(tail, b, n - base);
        b = tail;
    }
    if (classify(b, &quote, &sought) || cs->escape) {
        /* Rare in an API's bodies: which bytes the backslashes escape, one
         * by one (an escaped backslash escapes nothing). */
        int k, e = cs->escape;
        for (k = 0; k < 64; k++) {
            if (e) {
                escaped_bits |= (uint64_t)1 << k;
                e = 0;
            } else if (b[k] == '\\') {
                e = 1;
                cs->backslash_end = base + (size_t)k + 1;
            }
        }
        cs->escape = e;
    }
    quote &= ~escaped_bits;
    inside = running_xor(quote) ^ cs->inside; /* from an opening quote to its closing one */
    cs->inside = (uint64_t)0 - (inside >> 63);
    return sought & ~inside;
}

static inline unsigned lowest_bit(uint64_t x)
{
#if defined(__GNUC__)
    return (unsigned)__builtin_ctzll(x);
#else
    unsigned k = 0;
    while (!(x & 1)) {
        x >>= 1;
        k++;
    }
    return k;
#endif
}

/* Where the pass reads: the block at base, and its sought bits not yet
 * taken. */
typedef struct cursor {
    size_t base;
    uint64_t bits;
    carry cs;
} cursor;

static void cursor_start(cursor *c, const char *p, size_t n)
{
    c->base = 0;
    c->cs.inside = 0;
    c->cs.escape = 0;
    c->cs.backslash_end = 0;
    c->bits = n > 0 ? load_block(&c->cs, p, n, 0) : 0;
}

/* Take the next sought byte outside strings: its index, or n. */
static inline size_t cursor_next(cursor *c, const char *p, size_t n)
{
    size_t at;
    while (c->bits == 0) {
        if (n - c->base <= 64)
            return n;
        c->base += 64;
        c->bits = load_block(&c->cs, p, n, c->base);
    }
    at = c->base + lowest_bit(c->bits);
    c->bits &= c->bits - 1;
    return at;
}

/* -- the pass -- */

/* What the pass remembers of the objects it is inside: the colons of their
 * members, and the members it means to blank, blanked when the object
 * closes and no other key of it could be the same (`{"a":1,"a":null}`
 * decodes to a null `a`, which must then be dropped, not the 1 kept). */
#define SCAN_COLONS 1024 /* members of the open objects; more: leave it to the walk */
#define SCAN_BLANKS 256  /* members to blank in the open objects */

typedef struct scan {
    unsigned char object[MAX_DEPTH + 1]; /* per level: 1 in an object, 0 in an array */
    size_t open[MAX_DEPTH + 1];          /* where its bracket is */
    unsigned short colon_base[MAX_DEPTH + 1], blank_base[MAX_DEPTH + 1];
    size_t colons[SCAN_COLONS];
    struct { size_t from, to, key, key_len, colon; } blanks[SCAN_BLANKS];
    unsigned ncolons, nblanks;
} scan;

/* The opening quote of the key whose closing quote is at q: the unescaped
 * quote before it; or NOWHERE. */
static size_t key_open(const char *p, size_t q)
{
    size_t o = q;
    do {
        do {
            if (o == 0)
                return NOWHERE;
            o--;
        } while (p[o] != '"');
    } while (escaped(p, p + o));
    return o;
}

/* The object at depth closes: blank its null members, unless another key
 * of it might be the same as one of theirs (the same bytes, or longer ones
 * with an escape, which decode to fewer). Returns 0 in that case. Where a
 * backslash may stand in the object, each other key is found once (by its
 * unescaped opening quote), so a big object costs its keys' length once,
 * not once for each null. */
static int close_object(scan *sc, char *p, size_t depth, const cursor *cur)
{
    unsigned b, k, cb = sc->colon_base[depth], bb = sc->blank_base[depth];
    unsigned nc = sc->ncolons, nb = sc->nblanks;
    const size_t *colons = sc->colons;
    if (nb > bb && cur->cs.backslash_end <= sc->open[depth]) {
        /* no backslash since the '{': the other key is the same exactly
         * when its closing quote has the same bytes and a quote before
         * (one loop over colons for both cases measured 2.8M instructions
         * more on the 10,000-inbox body) */
        for (b = bb; b < nb; b++) {
            const char *key = p + sc->blanks[b].key;
            size_t len = sc->blanks[b].key_len, own = sc->blanks[b].colon;
            for (k = cb; k < nc; k++) {
                size_t q = space_before(p, colons[k]);
                if (colons[k] == own)
                    continue;
                if (q == NOWHERE || p[q] != '"')
                    return 0; /* not valid JSON: keep to the safe side */
                if (q > len && p[q - len - 1] == '"' && memcmp(p + q - len, key, len) == 0)
                    return 0;
            }
        }
    } else if (nb > bb) {
        /* each other key found once (a key's quotes may be escaped) */
        for (k = cb; k < nc; k++) {
            size_t q = space_before(p, colons[k]), o, klen;
            int escapes;
            if (q == NOWHERE || p[q] != '"' || (o = key_open(p, q)) == NOWHERE)
                return 0;
            klen = q - o - 1;
            escapes = memchr(p + o + 1, '\\', klen) != NULL;
            for (b = bb; b < nb; b++) {
                size_t len = sc->blanks[b].key_len;
                if (colons[k] != sc->blanks[b].colon
                    && ((klen == len && memcmp(p + o + 1, p + sc->blanks[b].key, len) == 0)
                        || (klen > len && escapes)))
                    return 0;
            }
        }
    }
    for (b = bb; b < nb; b++)
        memset(p + sc->blanks[b].from, ' ', sc->blanks[b].to - sc->blanks[b].from);
    sc->ncolons = cb;
    sc->nblanks = bb;
    return 1;
}

/* The n at i, in the object at depth: note its member for blanking, when
 * it is a `"key": null` member that may go (see above). Returns 0 if not. */
static int null_member(scan *sc, const char *p, size_t n, size_t i, size_t depth)
{
    size_t end = i + 4, colon, q, o, x, j, from, to;
    unsigned last = sc->nblanks - 1;
    int first;
    if (n - i < 4 || memcmp(p + i, "null", 4) != 0 || (end < n && is_token_byte(p[end])))
        return 0;
    colon = space_before(p, i);
    if (colon == NOWHERE || p[colon] != ':')
        return 0;
    q = space_before(p, colon);
    if (q == NOWHERE || p[q] != '"' || escaped(p, p + q))
        return 0;
    o = plain_key_start(p, q);
    if (o == NOWHERE)
        return 0;
    x = space_before(p, o);
    if (x == NOWHERE)
        return 0;
    j = skip_space(p, end, n);
    first = p[x] == '{'
            || (p[x] == ',' && sc->nblanks > sc->blank_base[depth] && sc->blanks[last].to == x + 1);
    if (first) {
        from = o;
        if (j < n && p[j] == '}')
            to = end;
        else if (j < n && p[j] == ',') {
            size_t k = skip_space(p, j + 1, n);
            if (!(k < n && p[k] == '"'))
                return 0;
            to = j + 1; /* and the comma after it */
        } else
            return 0;
    } else if (p[x] == ',') {
        size_t y = space_before(p, x);
        if (y == NOWHERE || !(p[y] == '"' || p[y] == '}' || p[y] == ']' || is_token_byte(p[y]))
            || !(j < n && (p[j] == ',' || p[j] == '}')))
            return 0;
        from = x; /* and the comma before it */
        to = end;
    } else
        return 0;
    if (sc->nblanks == SCAN_BLANKS)
        return 0;
    sc->blanks[sc->nblanks].from = from;
    sc->blanks[sc->nblanks].to = to;
    sc->blanks[sc->nblanks].key = o + 1;
    sc->blanks[sc->nblanks].key_len = q - o - 1;
    sc->blanks[sc->nblanks].colon = colon;
    sc->nblanks++;
    return 1;
}

static int scan_body(scan *sc, char *p, size_t n)
{
    size_t i, depth = 0;
    cursor cur;

    sc->object[0] = 0;
    sc->ncolons = sc->nblanks = 0;
    cursor_start(&cur, p, n);
    while ((i = cursor_next(&cur, p, n)) < n) {
        switch (p[i]) {
        case '{':
        case '[':
            if (depth >= MAX_DEPTH)
                return 0;
            depth++;
            sc->object[depth] = p[i] == '{';
            sc->open[depth] = i;
            sc->colon_base[depth] = (unsigned short)sc->ncolons;
            sc->blank_base[depth] = (unsigned short)sc->nblanks;
            break;
        case '}':
        case ']':
            if (depth == 0 || sc->object[depth] != (p[i] == '}'))
                return 0;
            if (p[i] == '}' && !close_object(sc, p, depth, &cur))
                return 0;
            depth--;
            break;
        case ':':
            if (!sc->object[depth] || sc->ncolons == SCAN_COLONS)
                return 0;
            sc->colons[sc->ncolons++] = i;
            break;
        default: /* an n */
            if (sc->object[depth] && !null_member(sc, p, n, i, depth))
                return 0;
            break;
        }
    }
    return depth == 0;
}

static int blank_null_members(char *p, size_t n)
{
    scan *sc = malloc(sizeof *sc);
    int whole;
    if (sc == NULL)
        return 0;
    whole = scan_body(sc, p, n);
    free(sc);
    return whole;
}

/* ---- the keys worth visiting ------------------------------------------ */

/* Where whole floats must become integers (lua-cjson 2.1.0 on 5.3+), a walk
 * over every member with lua_next costs a hash lookup a step and visits the
 * strings and booleans that need nothing. One pass over the body instead
 * collects the keys whose values are numbers, nulls, objects or arrays with
 * something to fix inside; the walk then looks up only those keys in each
 * object (a key an object lacks costs one failed lookup).
 *
 * The pass runs before decoding, and what it found is used only when the
 * body then decoded, so only its reading of valid JSON counts. It stops
 * only at colons (found 64 bytes at a time), and not at those right before
 * a string's opening quote: a member's colon follows its key's closing
 * quote (and maybe spaces), and that quote is unescaped, so every key
 * whose value may need fixing is found. The objects of an array repeat
 * their keys in one order, so the key after the last one found is tried
 * first, by comparing the 16 bytes before the colon.
 * A colon inside a string can look the same (`{"k,":" :1"}`); it adds a key
 * that is looked up for nothing, never hides one. (lua-cjson stops at a NUL
 * byte; keys after one are looked up for nothing too.) A key with an escape
 * decodes to other bytes, and more than KEYSET_MAX distinct keys would make
 * the lookups dearer than lua_next: both give up (collect_keys returns 0)
 * and leave the full walk. */
#define KEYSET_MAX 32

/* Besides the value kinds: an array of nothing that needs fixing (strings,
 * booleans, and numbers or nulls when those need nothing). */
#define K_FLAT 32

typedef struct keyset {
    struct key {
        /* The 16 bytes that end with the key's closing quote, as two
         * words, with masks for the bytes that are the key and its quotes
         * (the opening one if the key has at most 14 bytes): two compares
         * find a match, which for a longer key needs the rest compared. */
        uint64_t tail, tail_mask, head, head_mask;
        size_t len;
        int kinds; /* what the key's values were: K_NUMBER, K_NULL, K_TABLE, K_FLAT */
    } key[KEYSET_MAX];
    const char *text[KEYSET_MAX]; /* where each key's bytes are in the body */
    unsigned n;
} keyset;

/* memcmp(a, b, n) == 0 for the short keys of an API, eight bytes at a time. */
static int same_bytes(const char *a, const char *b, size_t n)
{
    uint64_t x, y;
    if (n >= 8) {
        for (; n > 8; n -= 8, a += 8, b += 8) {
            memcpy(&x, a, 8);
            memcpy(&y, b, 8);
            if (x != y)
                return 0;
        }
        memcpy(&x, a + n - 8, 8); /* the last 8, overlapping what matched */
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        uint32_t u, v, u2, v2;
        memcpy(&u, a, 4);
        memcpy(&v, b, 4);
        memcpy(&u2, a + n - 4, 4);
        memcpy(&v2, b + n - 4, 4);
        return u == v && u2 == v2;
    }
    while (n > 0 && *a == *b) {
        a++;
        b++;
        n--;
    }
    return n == 0;
}

/* Is key i of ks the one whose member's colon is at c (right after its
 * closing quote, at least 17 bytes into p)? Matched backwards: a plain key
 * has no quote of its own, so an unescaped quote just before its bytes
 * opens it. */
static inline int key_again(const keyset *ks, unsigned i, const char *p, const char *c)
{
    const struct key *k = &ks->key[i];
    size_t len = k->len;
    uint64_t t, h;
    memcpy(&t, c - 8, 8);
    memcpy(&h, c - 16, 8);
    if (((t & k->tail_mask) ^ k->tail) | ((h & k->head_mask) ^ k->head))
        return 0;
    if (len > 14) { /* the opening quote, and the bytes after it the words missed */
        if (!((size_t)(c - p) > len + 1 && c[-(ptrdiff_t)len - 2] == '"'
              && same_bytes(c - len - 1, ks->text[i], len - 15)))
            return 0;
        if ((size_t)(c - p) == len + 2)
            return 1;
    }
    /* ...and its opening quote is not escaped */
    return c[-(ptrdiff_t)len - 3] != '\\' || !escaped(p, c - len - 2);
}

/* The index in ks of the key whose closing quote is at close (unescaped),
 * added (with no kinds yet) unless it is there; -1 when no key closes
 * there (a colon inside a string), -2 when the pass must give up. */
static int keyset_find(keyset *ks, const char *p, const char *close)
{
    const char *open;
    size_t o, len;
    unsigned i;
    if ((o = key_open(p, (size_t)(close - p))) == NOWHERE)
        return -1;
    open = p + o + 1;
    len = (size_t)(close - open);
    for (i = 0; i < ks->n; i++)
        if (ks->key[i].len == len && same_bytes(ks->text[i], open, len))
            return (int)i;
    if (ks->n == KEYSET_MAX || !plain_key(p, (size_t)(open - p), (size_t)(close - p)))
        return -2;
    ks->text[i] = open;
    ks->key[i].len = len;
    ks->key[i].kinds = 0;
    {
        unsigned char b[16] = {0}, m[16] = {0};
        size_t k = len < 15 ? len + 2 : 16; /* the key and its quotes, or their last 16 */
        memcpy(b + 16 - k, close + 1 - k, k);
        memset(m + 16 - k, 0xff, k);
        memcpy(&ks->key[i].head, b, 8);
        memcpy(&ks->key[i].tail, b + 8, 8);
        memcpy(&ks->key[i].head_mask, m, 8);
        memcpy(&ks->key[i].tail_mask, m + 8, 8);
    }
    ks->n++;
    return (int)i;
}

/* Just past the string whose opening quote is at index i, or 0 (as
 * string_end). Sixteen bytes at a time where SSE2 is: an API's strings are
 * short, and memchr costs more to call than to run on them. */
static inline size_t skip_string(const char *p, size_t i, size_t n)
{
#if defined(__SSE2__) && !defined(HM_PORTABLE_SCAN)
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    size_t s = i + 1;
    while (n - s >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + s));
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)));
        if (m == 0) {
            s += 16;
            continue;
        }
        s += lowest_bit(m);
        if (p[s] == '"')
            return s + 1;
        if (n - s < 2)
            return 0;
        s += 2; /* a backslash, and the byte it escapes */
    }
    /* from s on by hand: escaped() counts a quote's whole run of backslashes */
    return s < n ? string_end(p, s - 1, n) : 0;
#else
    return string_end(p, i, n);
#endif
}

/* The kinds (K_NUMBER, K_NULL) of the elements of the array whose '[' is at
 * v, or -1 when one is an object or an array. The text is valid JSON: a
 * string ends at the next unescaped quote. */
static int flat_array(const char *p, const char *v, const char *end)
{
    size_t q = (size_t)(v - p) + 1, n = (size_t)(end - p);
    int kinds = 0;
    while (q < n && KIND(p[q]) == K_SPACE)
        q++;
    if (q < n && p[q] == ']')
        return 0;
    while (q < n) {
        if (p[q] == '"') {
            if ((q = skip_string(p, q, n)) == 0)
                return -1;
        } else if (KIND(p[q]) & K_TOKEN) {
            kinds |= KIND(p[q]) & (K_NUMBER | K_NULL);
            while (q < n && (KIND(p[q]) & K_TOKEN))
                q++;
        } else
            return -1;
        while (q < n && KIND(p[q]) == K_SPACE)
            q++;
        if (q == n || p[q] != ',')
            return q < n && p[q] == ']' ? kinds : -1;
        q++;
        while (q < n && KIND(p[q]) == K_SPACE)
            q++;
    }
    return -1;
}

/* The colons among the (at most) 64 bytes at p + base, a bit a byte, but
 * for the body's last byte and those right before a '"': a member whose
 * value is a string needs nothing, and is most of an API's members.
 * (Booleans need nothing either, but looking for them here costs more
 * than they do below; before a space, the value is found there too.) */
#if defined(__SSE2__) && !defined(HM_PORTABLE_SCAN)
static inline uint64_t colons_16(const unsigned char *b)
{
    const __m128i colon = _mm_set1_epi8(':'), quote = _mm_set1_epi8('"');
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)b);
    __m128i w = _mm_loadu_si128((const __m128i *)(const void *)(b + 1));
    __m128i found = _mm_andnot_si128(_mm_cmpeq_epi8(w, quote), _mm_cmpeq_epi8(v, colon));
    return (unsigned)_mm_movemask_epi8(found);
}

static inline uint64_t colons_64(const unsigned char *b)
{
    return colons_16(b) | colons_16(b + 16) << 16 | colons_16(b + 32) << 32
           | colons_16(b + 48) << 48;
}

static uint64_t colon_bits_last(const char *p, size_t n, size_t base)
{
    unsigned char tail[65];
    size_t len = n - base < 64 ? n - base : 64;
    memset(tail, ' ', sizeof tail);
    memcpy(tail, p + base, len);
    tail[len - 1] = ' '; /* a colon last has no value */
    return colons_64(tail);
}

static inline uint64_t colon_bits(const char *p, size_t n, size_t base)
{
    if (n - base < 65) /* the last block, and the byte after it */
        return colon_bits_last(p, n, base);
    return colons_64((const unsigned char *)p + base);
}
#else
static uint64_t colon_bits(const char *p, size_t n, size_t base)
{
    size_t k, len = n - base < 64 ? n - base : 64;
    uint64_t m = 0;
    for (k = 0; k < len && base + k + 1 < n; k++) /* a colon last has no value */
        if (p[base + k] == ':' && p[base + k + 1] != '"')
            m |= (uint64_t)1 << k;
    return m;
}
#endif

/* Collect the keys of the members whose values are of the kinds in want,
 * with the kinds each key's values were; an array counts as K_TABLE only
 * when it holds an object, an array, or elements of the kinds in
 * elem_want. Once a key is to be visited (any kind but K_FLAT), what its
 * other values are changes nothing: they are only matched. */
static int collect_keys(const char *p, size_t n, int want, int elem_want, keyset *ks)
{
    const char *end = p + n;
    size_t base = 0;
    unsigned next = 0, nk = 0; /* next: the key after the last one found */
    uint64_t bits;
    ks->n = 0;
    if (n == 0)
        return 1;
    bits = colon_bits(p, n, 0) & ~(uint64_t)1; /* a colon first has no key */
    for (;;) {
        for (; bits != 0; bits &= bits - 1) {
            const char *c = p + base + lowest_bit(bits), *v = c + 1, *close = c - 1;
            int kind = KIND(*v), i;
            struct key *k;
            if (kind == K_SPACE) {
                while (v < end && KIND(*v) == K_SPACE)
                    v++;
                if (v == end)
                    break;
                kind = KIND(*v);
            }
            if ((kind &= want) == 0)
                continue;
            if (next < nk && c - p > 16 && key_again(ks, next, p, c)) {
                /* the objects of an array repeat their keys in one order */
                i = (int)next++;
                if (next == nk)
                    next = 0;
            } else {
                if (*close != '"' || close == p) {
                    while (close > p && KIND(*close) == K_SPACE)
                        close--;
                    if (close == p || *close != '"')
                        continue; /* not a member's colon */
                }
                if (close[-1] == '\\' && escaped(p, close))
                    continue;
                if ((i = keyset_find(ks, p, close)) == -1)
                    continue;
                if (i == -2)
                    return 0;
                nk = ks->n;
                next = (unsigned)i + 1 == nk ? 0 : (unsigned)i + 1;
            }
            k = &ks->key[i];
            if ((k->kinds & ~K_FLAT) != 0)
                continue; /* visited already */
            if (*v == '[') {
                int elems = flat_array(p, v, end);
                if (elems >= 0 && (elems & elem_want) == 0)
                    kind = K_FLAT;
            }
            k->kinds |= kind;
        }
        if ((base += 64) >= n)
            return 1;
        bits = colon_bits(p, n, base);
    }
}

/* Is the error at the top the decoder's own verdict on its input? lua-cjson
 * (and Neovim's vim.json, built from it) says "Expected ... but found ...",
 * "Found too many nested data structures ..." or "JSON parser does not
 * support UTF-16 or UTF-32". Anything else (an interrupt raised by a debug
 * hook, a memory error) belongs to the caller. make fuzz checks that no
 * body makes the decoder say something else. */
static int decoder_verdict(lua_State *L, int status)
{
    const char *why;
    if (status != LUA_ERRRUN || lua_type(L, -1) != LUA_TSTRING)
        return 0;
    why = lua_tostring(L, -1);
    return strncmp(why, "Expected ", 9) == 0 || strncmp(why, "Found ", 6) == 0
        || strncmp(why, "JSON parser ", 12) == 0;
}

/* On Lua 5.4 a client keeps the string of its last large body (its user
 * value 1) until a body under HM_HOLD_MIN or over HM_SPARE_MAX, or close(),
 * drops it. The decoder needs the body as a Lua string, and lua-cjson copies
 * it again into a buffer as large; freed together, the two lay at the top of
 * glibc's heap, which then gave them back to the system (twice their size
 * is glibc's trim threshold once the first such block was freed), and the
 * next call faulted the pages in again. With the previous string alive until
 * the next one exists, that does not happen (5.4 in generational mode,
 * 10,000 inboxes, 40 calls: 15.6k page faults -> 9.4k, ~6% faster; in
 * incremental mode the faults were unchanged). Not on other Luas: on 5.2 and
 * 5.3 it moved where the incremental collector's cycles end and the peak grew
 * by 11-17 MB (5.2 ~7% faster, 5.3 not), on 5.1 by 3 MB for no speed, and
 * LuaJIT's strings do not come from malloc (BENCHMARKS.md). The trims came
 * from multi-megabyte blocks, so smaller bodies are left alone; one held
 * string a client, as it holds one body buffer.
 *
 * hold_body: the body string at the top; req at stack index ridx, whose
 * user value 1 is its client. */
#if LUA_VERSION_NUM == 504
static void hold_body(lua_State *L, hm_request *req, int ridx, size_t n)
{
    hm_client *c = req->client;
    int large = n >= HM_HOLD_MIN && n <= HM_SPARE_MAX && !c->closed;
    if (!large && !c->holding)
        return;
    lua_getiuservalue(L, ridx, 1);
    if (lua_touserdata(L, -1) != (void *)c) { /* not its client: keep nothing */
        lua_pop(L, 1);
        return;
    }
    if (large)
        lua_pushvalue(L, -2);
    else
        lua_pushnil(L);
    lua_setiuservalue(L, -2, 1);
    lua_pop(L, 1);
    c->holding = large;
}
#endif

/* Drop the string the client at stack index cidx keeps (close(), __gc). */
void hm_json_drop_held(lua_State *L, hm_client *c, int cidx)
{
#if LUA_VERSION_NUM == 504
    if (c->holding) {
        lua_pushnil(L);
        lua_setiuservalue(L, cidx, 1);
        c->holding = 0;
    }
#else
    (void)L;
    (void)c;
    (void)cidx;
#endif
}

/* Decode s (n bytes) with the module's decoder: push the value and return
 * 1, or push the decoder's complaint and return 0. Any other error is
 * raised on. With ridx not 0, req is at that stack index and its client may
 * keep the body string (hold_body, Lua 5.4). */
int hm_json_decode_string(lua_State *L, const char *s, size_t n, hm_request *req, int ridx)
{
    int status;
    lua_getfield(L, HM_STATE_IDX, HM_STATE_DECODE);
    lua_pushlstring(L, s != NULL ? s : "", n);
#if LUA_VERSION_NUM == 504
    if (ridx != 0)
        hold_body(L, req, ridx, n);
#else
    (void)req;
    (void)ridx;
#endif
    status = lua_pcall(L, 1, 1, 0);
    if (status == 0)
        return 1;
    if (!decoder_verdict(L, status))
        lua_error(L);
    return 0;
}

/* Before decoding: where blanking null members leaves the walk nothing to
 * do, blank them in req's body. The first HM_BODY_IN_ERROR bytes are saved
 * first, so a body that then fails to decode can be put back for err.body
 * (restore_body). Fills in what the walk must do after decoding (want_walk:
 * 0 when nothing). */
typedef struct prepared {
    int want_walk;
    int keyed;             /* ks holds the keys to visit (collect_keys) */
    keyset ks;
    size_t saved_len;      /* 0: nothing saved, nothing to restore */
    char saved[HM_BODY_IN_ERROR];
} prepared;

static void prepare_walk(lua_State *L, hm_request *req, walk *w, int jnull, int keep_null,
                         prepared *prep)
{
    char *body = req->body.data;
    size_t n = req->body.len, first;
    int flags, nulls;
    lua_getfield(L, HM_STATE_IDX, JFLAGS);
    flags = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    first = body != NULL ? find_null(body, n) : n;
    nulls = first < n;
    prep->saved_len = 0;
    prep->keyed = 0;
    w->jnull = jnull;
    w->jnull_type = lua_type(L, jnull);
    w->jnull_ptr = lua_touserdata(L, jnull);
    w->keep_null = keep_null;
    w->ints = (flags & JF_FLOATS) != 0;
    w->array_null = nulls && (flags & JF_FOREIGN_NULL) != 0;
    w->object_null = nulls && (!keep_null || (flags & JF_FOREIGN_NULL) != 0);
    prep->want_walk = w->ints || w->array_null || w->object_null;
    if (w->object_null && !keep_null && flags == 0) {
        /* lua-cjson and no integers to make: only object nulls to drop.
         * Blanking them in the text is one sequential pass, after which no
         * walk is needed and lua-cjson builds smaller tables; looking them
         * up after decoding takes fewer instructions but touches every
         * object again (LuaJIT, 10,000 inboxes: 3% slower, pinned). The
         * key pass below is the fallback where blanking gives up. */
        /* Saved whole: a blanked member can start (its key, or the comma
         * before it) thousands of bytes before its null. */
        prep->saved_len = n < HM_BODY_IN_ERROR ? n : HM_BODY_IN_ERROR;
        memcpy(prep->saved, body, prep->saved_len);
        if (blank_null_members(body, n))
            w->object_null = prep->want_walk = 0;
    }
    if (!prep->want_walk)
        return;
    /* The keys to visit, when they can be told (unused if the body then
     * fails to decode: the pass reads valid JSON right only). */
    prep->keyed = collect_keys(body, n,
                               (w->ints ? K_NUMBER : 0) | (w->object_null ? K_NULL : 0) | K_TABLE,
                               (w->ints ? K_NUMBER : 0) | (w->array_null ? K_NULL : 0), &prep->ks);
}

static void restore_body(hm_request *req, const prepared *prep)
{
    if (prep->saved_len > 0)
        memcpy(req->body.data, prep->saved, prep->saved_len);
}

/* Decode req's body (req is at stack index ridx; 0: nowhere, and then its
 * client keeps nothing). On success push the value and return 1; on failure
 * push a description and return 0. */
int hm_json_decode(lua_State *L, hm_request *req, int ridx, int keep_null)
{
    const char *p = req->body.data ? req->body.data : "";
    size_t i = 0, n = req->body.len;
    int top = lua_gettop(L), jnull;
    walk w;
    prepared prep;

    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
        i++;
    if (i == n) {
        lua_pushliteral(L, "empty response body, expected JSON");
        return 0;
    }
    if ((req->shape == HM_SHAPE_ARRAY && p[i] != '[')
        || (req->shape == HM_SHAPE_OBJECT && p[i] != '{')) {
        if (p[i] != '[' && p[i] != '{' && p[i] != '"' && p[i] != '-' && p[i] != 't'
            && p[i] != 'f' && p[i] != 'n' && !(p[i] >= '0' && p[i] <= '9'))
            lua_pushliteral(L, "response is not JSON");
        else
            lua_pushfstring(L, "expected a JSON %s, got %s",
                            req->shape == HM_SHAPE_ARRAY ? "array" : "object", shape_name(p[i]));
        return 0;
    }

    lua_getfield(L, HM_STATE_IDX, HM_STATE_JNULL);
    jnull = lua_gettop(L);
    prepare_walk(L, req, &w, jnull, keep_null, &prep);
    if (!hm_json_decode_string(L, p, n, req, ridx)) {
        restore_body(req, &prep);
        lua_pushfstring(L, "invalid JSON: %s", lua_tostring(L, -1));
        lua_replace(L, top + 1);
        lua_settop(L, top + 1);
        return 0;
    }
    if (lua_istable(L, -1) && prep.want_walk) {
        int ok;
        w.nkeys = -1;
        if (prep.keyed && lua_checkstack(L, (int)prep.ks.n + 1)) {
            unsigned k;
            w.keys = lua_gettop(L) + 1;
            w.nkeys = 0;
            for (k = 0; k < prep.ks.n; k++) {
                if ((prep.ks.key[k].kinds & ~K_FLAT) != 0) { /* flat arrays need nothing */
                    lua_pushlstring(L, prep.ks.text[k], prep.ks.key[k].len);
                    w.nkeys++;
                }
            }
            lua_pushvalue(L, w.keys - 1);
        }
        if (!lua_checkstack(L, (HELD_MAX + 4) * HELD_DEPTH))
            hm_raise_memory(L);
        ok = normalise(L, &w, 1);
        if (w.nkeys >= 0)
            lua_settop(L, w.keys - 1);
        if (!ok) {
            lua_pushliteral(L, "JSON nested too deeply");
            lua_replace(L, top + 1);
            lua_settop(L, top + 1);
            return 0;
        }
    } else if (lua_rawequal(L, -1, jnull)) {
        lua_pop(L, 1);
        lua_pushlightuserdata(L, NULL);
    }
#if HM_HAS_INTEGERS
    else {
        lua_Integer whole;
        if (integral(L, -1, &whole)) {
            lua_pop(L, 1);
            lua_pushinteger(L, whole);
        }
    }
#endif
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    return 1;
}

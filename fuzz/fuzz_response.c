/* libFuzzer target for what a server controls before Lua sees it: header
 * lines (status line, Location, request ids, Retry-After as seconds or an
 * HTTP-date) and the key redaction over header values and bodies.
 * It includes transfer.c to reach its static functions.
 * Build and run: make fuzz */
#include "../src/transfer.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hm_client client;
    hm_request req;
    const char *p = (const char *)data, *end = p + size;
    char key[] = "hm-fuzz-key";

    memset(&req, 0, sizeof req);
    client.api_key = key;
    client.max_response = 1 << 16;
    req.client = &client;
    req.retry_after = -1;

    /* Each line of the input is a header line; the whole input is also a body. */
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        char *line = malloc(n + 1);
        if (line == NULL)
            break;
        memcpy(line, p, n);
        line[n] = '\0';
        on_header(line, 1, n, &req);
        free(line);
        p += n;
    }
    on_body((char *)data, 1, size, &req);
    strncpy(req.detail, (const char *)data, size < sizeof req.detail ? size : sizeof req.detail - 1);
    redact_response(&req);

    reset_response_headers(&req);
    free(req.body.data);
    return 0;
}

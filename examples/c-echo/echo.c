/* c-echo: the guest contract without any SDK, in C with wasi-libc.
 * stdin is the input, stdout the output, stderr the log; exit 1 with a message on stderr
 * fails the job.
 *
 * Run it (Debian packages clang lld wasi-libc libclang-rt-14-dev-wasm32):
 *   clang --target=wasm32-wasi -O2 -o c-echo.wasm examples/c-echo/echo.c
 *   cargo run -- run c-echo.wasm --input '"hello"'
 */
#include <stdio.h>

/* Static, not on the stack: wasm-ld gives C programs a 64 KiB stack by default. */
static char buf[65536];

int main(void) {
    size_t total = 0, n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        if (fwrite(buf, 1, n, stdout) != n) {
            fprintf(stderr, "error: cannot write the output\n");
            return 1;
        }
        total += n;
    }
    if (total == 0) {
        fprintf(stderr, "error: empty input\n");
        return 1;
    }
    fprintf(stderr, "echoed %zu bytes\n", total);
    return 0;
}

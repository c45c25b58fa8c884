/* The function being patched and a helper the fixed code calls; built into the test program
 * (target.c) or into libcompute.so. Baseline: compute(x) = 2x+1. Fixed: compute(x) = helper(x). */
__attribute__((noipa)) int helper(int x) { return x * 3; }
/* Page-aligned, so that compute() and spin() (target.c) never share a page: a window writes
 * the sites of one page at once, and the two-site fault tests need two writes. */
__attribute__((noipa, aligned(4096))) int compute(int x) { return x * 2 + 1; }

/* The function being patched and a helper the fixed code calls; built into the test program
 * (target.c) or into libcompute.so. Baseline: compute(x) = 2x+1. Fixed: compute(x) = helper(x). */
__attribute__((noipa)) int helper(int x) { return x * 3; }
__attribute__((noipa)) int compute(int x) { return x * 2 + 1; }

/**
 * A full garbage collection on demand, for tests that prove with WeakRefs that nothing keeps an object: V8's
 * `gc()` exists only with `--expose-gc`, which can be set at run time and is then found in a new context.
 */
import v8 from "node:v8";
import vm from "node:vm";

/** Runs a full garbage collection now. */
export function collectGarbage(): void {
  v8.setFlagsFromString("--expose-gc");
  (vm.runInNewContext("gc") as () => void)();
}

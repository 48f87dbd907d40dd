/**
 * The librdkafka the tests run the service with: LIBRDKAFKA_PATH when set, else the pinned build that
 * scripts/setup.sh made (scripts/librdkafka.sh writes its path to .tools/librdkafka-path). Undefined when neither
 * is there: the service then looks where it always does (next to the executable, the system library path).
 */
const PATH_FILE = new URL("../../.tools/librdkafka-path", import.meta.url).pathname;

function testLibrary(): string | undefined {
  const configured = Deno.env.get("LIBRDKAFKA_PATH");
  if (configured) return configured;
  try {
    return Deno.readTextFileSync(PATH_FILE).trim() || undefined;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

export const LIBRDKAFKA_PATH: string | undefined = testLibrary();

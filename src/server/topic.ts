/** Kafka topic name rules, checked the same way on every listener. */

/** Kafka's limit on the length of a topic name. */
export const MAX_TOPIC_LENGTH = 249;

const TOPIC_CHARS = /^[a-zA-Z0-9._-]+$/;
/** The last name found valid: clients name the same topic request after request, and this runs for each. */
let lastValid: string | undefined;

/**
 * Returns why `name` is not a valid Kafka topic name, or undefined when it is.
 * Kafka allows 1 to 249 characters from [a-zA-Z0-9._-], except "." and "..".
 * @example topicProblem("orders.v1") // undefined
 * @example topicProblem("a/b") // 'invalid topic name: "a/b": only [a-zA-Z0-9._-] are allowed'
 */
export function topicProblem(name: string): string | undefined {
  if (name === lastValid) return undefined;
  if (name.length === 0) return "invalid topic name: empty";
  if (name.length > MAX_TOPIC_LENGTH) {
    return `invalid topic name: ${name.length} characters, at most ${MAX_TOPIC_LENGTH} are allowed`;
  }
  if (!TOPIC_CHARS.test(name)) {
    return `invalid topic name: ${JSON.stringify(name)}: only [a-zA-Z0-9._-] are allowed`;
  }
  if (name === "." || name === "..") return `invalid topic name: ${JSON.stringify(name)} is reserved`;
  lastValid = name;
  return undefined;
}

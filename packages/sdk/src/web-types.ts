/**
 * Fetch-API parameter types, derived from the globals @types/node declares, so the public types
 * need no DOM lib in the consumer's tsconfig.
 */
export type HeadersInit = NonNullable<ConstructorParameters<typeof Headers>[0]>;
export type BodyInit = NonNullable<ConstructorParameters<typeof Response>[0]>;

/** RFC 8785 canonical JSON (the `canonicalize` package), typed for NodeNext. */
import canonicalizeModule from 'canonicalize';

// canonicalize is CommonJS whose types declare an ESM default export; under NodeNext the default
// import is the module object at type level but the function at run time. Accept either.
const impl: (input: unknown) => string | undefined =
  typeof canonicalizeModule === 'function'
    ? canonicalizeModule
    : (canonicalizeModule as { default: (input: unknown) => string | undefined }).default;

/** The canonical JSON text of a JSON value (keys sorted, numbers in shortest form). */
export function canonicalJson(value: unknown): string {
  const text = impl(value);
  if (text === undefined) throw new Error('value has no JSON form');
  return text;
}

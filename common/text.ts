/**
 * Text that PostgreSQL cannot store: U+0000, or half of a surrogate pair without its other half
 * (which JSON can carry as a \u escape). Pure, for workflow code and ingestion alike.
 */
export const UNSTORABLE_TEXT =
  /\0|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** The words that say why such text is refused. */
export const UNSTORABLE_PROBLEM =
  'contains U+0000 or a lone surrogate, which PostgreSQL cannot store';

// JSON.parse keeps one of two equal keys; journald and jq users see both. This scans for them.

/** Keys that occur twice in one object of a JSON text, as "path.key" (a tiny tokenizer, not a parser). */
export function duplicateKeys(json: string): string[] {
  const dups: string[] = [];
  const stack: Array<{ keys: Set<string> | null; key?: string }> = [];
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '"') {
      let j = i + 1;
      while (json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      const top = stack[stack.length - 1];
      if (expectKey && top?.keys) {
        const key = JSON.parse(json.slice(i, j + 1)) as string;
        if (top.keys.has(key)) dups.push(key);
        top.keys.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === '{') {
      stack.push({ keys: new Set() });
      expectKey = true;
    } else if (c === '[') {
      stack.push({ keys: null });
    } else if (c === '}' || c === ']') {
      stack.pop();
    } else if (c === ',') {
      expectKey = stack[stack.length - 1]?.keys != null;
    }
  }
  return dups;
}

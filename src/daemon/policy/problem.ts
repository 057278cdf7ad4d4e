/** One thing wrong with the configuration, at a place in a file. */
export interface Problem {
  file: string;
  /** 1-based; 0 when the problem is about the file as a whole (it cannot be read, it is not owned by root...). */
  line: number;
  /** 1-based byte column; 0 together with line 0. */
  column: number;
  message: string;
}

/** Where to report a problem: a place in a file. */
export type Site = Omit<Problem, 'message'>;

/** `file:line:column: message` (the form compilers use, which editors can jump to); `file: message` for line 0. */
export function formatProblem(p: Problem): string {
  return p.line > 0 ? `${p.file}:${p.line}:${p.column}: ${p.message}` : `${p.file}: ${p.message}`;
}

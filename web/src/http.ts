/**
 * The page's HTTP calls (`/api/login`, `/api/logout`, `/api/info`). A
 * request that never reached the server fails in fetch with the browser's
 * own words ("Failed to fetch", "Load failed", "NetworkError when
 * attempting to fetch resource."), which say nothing a person can act on.
 */
export const UNREACHABLE = 'cannot reach the server: is it running? Try again in a moment';

export async function httpCall(url: string, init?: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch {
    throw new Error(UNREACHABLE);
  }
}

/**
 * The JSON body of a reply, or `{}` when it has none (a proxy's HTML error
 * page in front of a stopped server): the caller then reports the status.
 */
export async function jsonBody<T extends object>(res: Response): Promise<Partial<T>> {
  try {
    return (await res.json()) as Partial<T>;
  } catch {
    return {};
  }
}

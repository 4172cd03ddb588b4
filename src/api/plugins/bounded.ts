/**
 * The value of `work`, or undefined when it fails or takes longer than `ms` (then `onFailure`
 * hears why). For fail-open checks in front of a request: a slow or broken Redis must not hold
 * the request up or turn into an error of its own.
 */
export async function bounded<T>(work: Promise<T>, ms: number, what: string, onFailure: (err: unknown) => void): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => {
      onFailure(new Error(`${what} did not answer within ${ms} ms`));
      resolve(undefined);
    }, ms);
    timer.unref();
  });
  // A late rejection (after the timeout won, e.g. the connection closing) must not go unhandled.
  work.catch(() => undefined);
  try {
    return await Promise.race([work, timeout]);
  } catch (err) {
    onFailure(err);
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

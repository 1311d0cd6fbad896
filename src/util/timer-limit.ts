/** The longest delay `setTimeout` takes (2^31 - 1 ms): a longer one (Infinity included) fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

import { useEffect, useRef, useState } from "react";

// useThrottled follows value at most once per ms milliseconds (at once
// when ms is 0): re-drawing 10,000 edges and matrix cells for every batch
// of a big fan-out would freeze the page.
export function useThrottled<T>(value: T, ms: number): T {
  const [shown, setShown] = useState(value);
  const last = useRef(0);
  useEffect(() => {
    if (ms === 0) {
      setShown(value);
      return;
    }
    const wait = Math.max(0, last.current + ms - Date.now());
    const t = setTimeout(() => {
      last.current = Date.now();
      setShown(value);
    }, wait);
    return () => clearTimeout(t);
  }, [value, ms]);
  return ms === 0 ? value : shown;
}

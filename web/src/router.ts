/** Tiny pathname router: "/" (room list) and "/room/{id}" (chat view). */
import { useEffect, useState } from 'react';

export type Route = { name: 'home' } | { name: 'room'; roomId: number };

export function parseRoute(pathname: string): Route {
  const m = /^\/room\/(\d+)\/?$/.exec(pathname);
  if (m) return { name: 'room', roomId: Number(m[1]) };
  return { name: 'home' };
}

export function navigate(path: string, replace = false): void {
  if (location.pathname === path) return;
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  window.dispatchEvent(new Event('chattrio:navigate'));
}

export function useRoute(): Route {
  const [route, setRoute] = useState<Route>(() => parseRoute(location.pathname));
  useEffect(() => {
    const update = () => setRoute(parseRoute(location.pathname));
    window.addEventListener('popstate', update);
    window.addEventListener('chattrio:navigate', update);
    return () => {
      window.removeEventListener('popstate', update);
      window.removeEventListener('chattrio:navigate', update);
    };
  }, []);
  return route;
}

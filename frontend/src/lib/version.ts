// What the open page does when a new release has been deployed while it was open.
//
// SvelteKit learns about a new release from the `x-sveltekit-version` header of data
// responses, when the tab becomes visible again, and by polling `/_app/version.json`
// (vite.config.ts). Once it knows, the next link or `goto` navigation becomes a full page
// load, so the visitor moves to the new release's code instead of mixing old client code
// with the new server for long. (Until then, and for back/forward, the old code keeps
// working: the old release's assets stay reachable, see docs/site.md, "Assets of
// earlier releases".)

/** The parts of SvelteKit's `BeforeNavigate` that the decision needs. */
export interface PendingNavigation {
	type: string;
	willUnload: boolean;
	to: { url: URL } | null;
}

/**
 * The URL to load in full instead of a client-side navigation, or null to let SvelteKit
 * navigate. Only link and `goto` navigations within the app are turned into full loads, and
 * only once a new release is known: those can be cancelled before SvelteKit requests
 * anything. Back/forward stays client-side: the browser has already moved in its history,
 * and SvelteKit would start loading data that the full load then aborts.
 */
export function fullLoadFor(updated: boolean, navigation: PendingNavigation): string | null {
	if (!updated || navigation.willUnload || navigation.to === null) return null;
	if (navigation.type !== 'link' && navigation.type !== 'goto') return null;
	return navigation.to.url.href;
}

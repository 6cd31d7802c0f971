// What the open page does when a new release has been deployed while it was open.
//
// SvelteKit learns about a new release from the `x-sveltekit-version` header of data
// responses, when the tab becomes visible again, and by polling `/_app/version.json`
// (vite.config.ts). Once it knows, the next in-app navigation becomes a full page load,
// so the visitor moves to the new release's code instead of mixing old client code with
// the new server. (The old release's assets stay reachable meanwhile: see README.md,
// "Assets of earlier releases".)

/** The parts of SvelteKit's `BeforeNavigate` that the decision needs. */
export interface PendingNavigation {
	type: string;
	willUnload: boolean;
	to: { url: URL } | null;
}

/** A full page load to do instead of a client-side navigation. */
export interface FullLoad {
	href: string;
	/**
	 * Cancel SvelteKit's client-side navigation first. Not for back/forward: the browser
	 * has already moved in its history, and cancelling would move it back.
	 */
	cancel: boolean;
}

/**
 * Whether a navigation must become a full page load: only when a new release exists and
 * the navigation would otherwise stay in the page (a link or `goto` within the app, or
 * back/forward between its pages).
 */
export function fullLoadFor(updated: boolean, navigation: PendingNavigation): FullLoad | null {
	if (!updated || navigation.willUnload || navigation.to === null) return null;
	if (navigation.type !== 'link' && navigation.type !== 'goto' && navigation.type !== 'popstate') {
		return null;
	}
	return { href: navigation.to.url.href, cancel: navigation.type !== 'popstate' };
}

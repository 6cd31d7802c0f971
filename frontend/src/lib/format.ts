// Pure presentation helpers. They run both on the server and in the browser, so the
// output must not depend on the machine's locale or time zone (hydration must match).

const LOCALE = 'en-GB';
const DECIMAL = /^-?\d+(\.\d+)?$/;

/**
 * Formats a decimal string from the API ("12.50") as money ("€12.50").
 * The string is passed to Intl as-is, so no binary floating point rounding happens.
 * Returns an em dash for a missing price and the raw text for anything unparseable.
 */
export function formatPrice(price: string | null | undefined, currency: string): string {
	if (price === null || price === undefined || price.trim() === '') return '—';
	const value = price.trim();
	if (!DECIMAL.test(value)) return value;
	try {
		return new Intl.NumberFormat(LOCALE, { style: 'currency', currency }).format(
			value as Intl.StringNumericLiteral
		);
	} catch {
		// unknown currency code
		return `${value} ${currency}`;
	}
}

/**
 * Formats an ISO-8601 timestamp as "7 Mar 2026, 14:05 UTC" (always UTC, so server and
 * browser render the same text). Returns an em dash for a missing or invalid value.
 */
export function formatTimestamp(iso: string | null | undefined): string {
	if (!iso) return '—';
	const date = new Date(iso);
	if (Number.isNaN(date.getTime())) return '—';
	const text = new Intl.DateTimeFormat(LOCALE, {
		day: 'numeric',
		month: 'short',
		year: 'numeric',
		hour: '2-digit',
		minute: '2-digit',
		hourCycle: 'h23',
		timeZone: 'UTC'
	}).format(date);
	return `${text} UTC`;
}

/**
 * Returns the URL if it is an absolute http(s) URL, otherwise null. Used before putting
 * API-provided URLs into an href, so that e.g. `javascript:` URLs are never rendered as links.
 */
export function safeHttpUrl(url: string | null | undefined): string | null {
	if (!url) return null;
	try {
		const parsed = new URL(url);
		return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : null;
	} catch {
		return null;
	}
}

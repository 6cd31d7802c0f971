// Shape checks for API responses: a backend that answers with something unexpected is
// reported as a bad gateway instead of crashing the page while rendering.
import type { PricePoint, Product } from './types.ts';

function isObject(value: unknown): value is Record<string, unknown> {
	return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isNullableString(value: unknown): value is string | null {
	return value === null || typeof value === 'string';
}

export function isProduct(value: unknown): value is Product {
	return (
		isObject(value) &&
		Number.isInteger(value.id) &&
		typeof value.name === 'string' &&
		isNullableString(value.url) &&
		isNullableString(value.current_price) &&
		typeof value.currency === 'string' &&
		isNullableString(value.price_updated_at)
	);
}

export function isPricePoint(value: unknown): value is PricePoint {
	return (
		isObject(value) &&
		typeof value.price === 'string' &&
		typeof value.currency === 'string' &&
		typeof value.observed_at === 'string'
	);
}

export function isArrayOf<T>(value: unknown, guard: (item: unknown) => item is T): value is T[] {
	return Array.isArray(value) && value.every(guard);
}

/**
 * Turns an error body from the API (FastAPI style `{"detail": ...}`) into one readable
 * sentence, or null when there is nothing useful in it.
 */
export function describeApiError(body: unknown): string | null {
	if (!isObject(body)) return null;
	const detail = body.detail;
	if (typeof detail === 'string' && detail.trim() !== '') return detail.trim();
	if (Array.isArray(detail)) {
		const messages = detail
			.map((item) => (isObject(item) && typeof item.msg === 'string' ? item.msg : null))
			.filter((msg): msg is string => msg !== null && msg.trim() !== '');
		if (messages.length > 0) return messages.join('; ');
	}
	return null;
}

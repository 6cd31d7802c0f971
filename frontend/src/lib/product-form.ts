import type { NewProduct } from './types.ts';
import { safeHttpUrl } from './format.ts';

export const NAME_MAX_LENGTH = 200;
export const URL_MAX_LENGTH = 2000;

export interface ProductFormErrors {
	name?: string;
	url?: string;
}

export type ParsedProductForm =
	| { ok: true; product: NewProduct }
	| { ok: false; values: { name: string; url: string }; errors: ProductFormErrors };

function field(data: FormData, key: string): string {
	const value = data.get(key);
	return typeof value === 'string' ? value.trim() : '';
}

/** Validates the "add product" form. Pure, so it is unit-tested without a server. */
export function parseProductForm(data: FormData): ParsedProductForm {
	const name = field(data, 'name');
	const url = field(data, 'url');
	const errors: ProductFormErrors = {};

	if (name === '') errors.name = 'Enter a product name.';
	else if (name.length > NAME_MAX_LENGTH)
		errors.name = `Use at most ${NAME_MAX_LENGTH} characters.`;

	if (url !== '') {
		if (url.length > URL_MAX_LENGTH) errors.url = `Use at most ${URL_MAX_LENGTH} characters.`;
		else if (safeHttpUrl(url) === null)
			errors.url = 'Enter a full http:// or https:// address, or leave it empty.';
	}

	if (errors.name || errors.url) return { ok: false, values: { name, url }, errors };
	return { ok: true, product: { name, url: url === '' ? null : url } };
}

/** What the form action returns on failure, so the page can redisplay the input. */
export interface ProductFormFailure {
	values: { name: string; url: string };
	errors: ProductFormErrors;
	/** A message about the whole submission, e.g. the API's reason for rejecting it. */
	message: string | null;
}

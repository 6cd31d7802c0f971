import { error, fail } from '@sveltejs/kit';
import { createProduct, listProducts } from '#lib/server/api.ts';
import { PAGE_SIZE, pageOf, parseAfter } from '#lib/paging.ts';
import { parseProductForm, type ProductFormFailure } from '#lib/product-form.ts';
import type { Actions, PageServerLoad } from './$types';

export const load: PageServerLoad = async ({ fetch, url }) => {
	const page = parseAfter(url.searchParams);
	if ('invalid' in page) error(400, 'This page link is broken: its “after” must be a product id.');

	// One row more than the page shows tells whether there is a next page.
	const rows = await listProducts(fetch, { limit: PAGE_SIZE + 1, after: page.after ?? 0 });
	const { items, next } = pageOf(rows, PAGE_SIZE);
	return { products: items, after: page.after, next };
};

export const actions: Actions = {
	default: async ({ request, fetch }) => {
		const parsed = parseProductForm(await request.formData());
		if (!parsed.ok) {
			return fail<ProductFormFailure>(400, { values: parsed.values, errors: parsed.errors, message: null });
		}

		const result = await createProduct(fetch, parsed.product);
		if (!result.ok) {
			return fail<ProductFormFailure>(result.status, {
				values: { name: parsed.product.name, url: parsed.product.url ?? '' },
				errors: {},
				message: result.message
			});
		}

		return { created: { id: result.product.id, name: result.product.name } };
	}
};

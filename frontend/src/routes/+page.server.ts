import { fail } from '@sveltejs/kit';
import { createProduct, listProducts } from '#lib/server/api.ts';
import { parseProductForm, type ProductFormFailure } from '#lib/product-form.ts';
import type { Actions, PageServerLoad } from './$types';

export const load: PageServerLoad = async ({ fetch }) => {
	const products = await listProducts(fetch);
	return { products };
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
